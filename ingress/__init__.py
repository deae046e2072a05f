"""Bayou ingress: MQTT broker nodes and the bridge to Kafka.

The data path, module by module (docs/architecture.md has the whole tree):

- a PUBLISH enters in :mod:`ingress.wire.connection`, goes through :mod:`ingress.inbound`
  (route rules of :mod:`ingress.routing`, headers of :mod:`ingress.contract`) and becomes a
  Kafka record in :mod:`ingress.kafka.producer`;
- an outbound record arrives through :mod:`ingress.kafka.topic_reader` and leaves for a device
  in :mod:`ingress.outbound.send` (live delivery or catch-up);
- :mod:`ingress.state` holds what the node materialises from Kafka, :mod:`ingress.node` wires
  it all.

Importing this package is cheap; the record contract lives in :mod:`ingress.contract`
and imports neither the broker nor a Kafka client, so agents can depend on it alone.
"""
