"""Kafka I/O that both sides of Bayou share: client settings and the assigned-partition reader.

The floor under :mod:`ingress` and :mod:`agents`: it imports neither (DESIGN §6), only
confluent-kafka, the one Kafka client family of the product.
"""
