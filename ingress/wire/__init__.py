"""MQTT on the wire: bytes in and out of a client connection.

Where a PUBLISH enters the node: a listener (:mod:`ingress.wire.listeners` for TLS and WebSocket,
the node's TCP server) hands the bytes to :class:`ingress.wire.connection.MQTTConnection`, whose
framer (:mod:`ingress.wire.codec`) cuts them into packets; the connection passes each PUBLISH
to the inbound path (:mod:`ingress.inbound`). Outbound PUBLISH packets leave through the same
connection's ``write``.
"""
