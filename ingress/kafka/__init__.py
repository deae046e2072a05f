"""The node's Kafka clients, all on confluent-kafka.

:mod:`ingress.kafka.producer` is where a PUBLISH becomes a Kafka record (``acks=all``);
:mod:`ingress.kafka.topic_reader` follows every partition of the outbound and state topics;
:mod:`ingress.kafka.ranges` reads bounded ranges again for a connection catching up. The readers
are the asyncio side (thread → event loop) of :class:`kafkaio.reader.PartitionReader`.
"""
