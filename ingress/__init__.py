"""Bayou ingress: MQTT broker nodes and the bridge to Kafka.

Importing this package is cheap; the record contract lives in :mod:`ingress.contract`
and imports neither the broker nor aiokafka, so agents can depend on it alone.
"""
