"""The outbound path: Kafka records to the MQTT clients of this node.

Records of the delivery topics arrive from :class:`ingress.kafka.topic_reader.TopicReader`
(live delivery, :mod:`ingress.outbound.live`) or from a bounded re-read for connections catching
up (:mod:`ingress.outbound.catch_up`); both hand them to the one send routine in
:mod:`ingress.outbound.send`, where an outbound record leaves for a device.
:mod:`ingress.outbound.dedup` drops repeated agent results on the way.
"""
