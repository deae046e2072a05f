"""One MQTT 3.1.1 client connection: an ``asyncio.Protocol`` over Bayou's own framer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from ingress import codec
from ingress.amqtt_packets import decode_connect, decode_subscribe, decode_unsubscribe
from ingress.codec import ProtocolError
from ingress.metrics import PROTOCOL_ERRORS_TOTAL
from ingress.topics import TopicError, validate_topic_filter, validate_topic_name

if TYPE_CHECKING:
    from ingress.node import IngressNode

log = logging.getLogger(__name__)

# CONNACK return codes (MQTT 3.1.1 §3.2.2.3).
CONNACK_ACCEPTED = 0
CONNACK_BAD_PROTOCOL = 1
CONNACK_IDENTIFIER_REJECTED = 2

# Highest QoS this node grants and accepts inbound; QoS 2 is not built yet.
MAX_QOS = 1


class MQTTConnection(asyncio.Protocol):
    """Parses a client's packets and acts on them; closes the connection on any violation."""

    def __init__(self, node: IngressNode) -> None:
        self.node = node
        self.framer = codec.Framer(node.config.max_packet_size)
        self.transport: asyncio.Transport | None = None
        self.client_id: str | None = None
        self.keep_alive = 0
        self.last_seen = time.monotonic()
        self.filters: dict[str, int] = {}
        # QoS 1 publishes awaiting Kafka, in arrival order: PUBACKs leave in that order.
        self._acks: deque[list[int]] = deque()
        self._next_pid = 0
        self._flush_scheduled = False
        self.inflight_out: dict[int, float] = {}
        self.closed = False
        self.peer = "?"

    # asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.node.connection_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.node.connection_closed(self)

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        try:
            for pkt in self.framer.feed(data):
                if self.closed:
                    return
                self._handle(pkt)
        except ProtocolError as exc:
            self.abort(str(exc))

    # packets ----------------------------------------------------------------------------

    def _handle(self, pkt: codec.Packet) -> None:
        t = pkt.type
        if self.client_id is None:
            if t != codec.CONNECT:
                raise ProtocolError(f"packet type {t} before CONNECT")  # [MQTT-3.1.0-1]
            self._on_connect(pkt)
        elif t == codec.PUBLISH:
            self._on_publish(pkt)
        elif t == codec.PUBACK:
            self.inflight_out.pop(codec.decode_packet_id(pkt.body), None)
        elif t == codec.PINGREQ:
            self.write(codec.PINGRESP_BYTES)
        elif t == codec.SUBSCRIBE:
            self._on_subscribe(pkt)
        elif t == codec.UNSUBSCRIBE:
            self._on_unsubscribe(pkt)
        elif t == codec.DISCONNECT:
            self.close()
        elif t == codec.CONNECT:
            raise ProtocolError("second CONNECT")  # [MQTT-3.1.0-2]
        else:
            raise ProtocolError(f"unsupported packet type {t}")

    def _on_connect(self, pkt: codec.Packet) -> None:
        info = decode_connect(pkt.flags, pkt.body)
        if info.protocol_name != "MQTT" or info.protocol_level != 4:
            # [MQTT-3.1.2-2]: answer 0x01, then close.
            self.write(codec.encode_connack(CONNACK_BAD_PROTOCOL))
            self.abort(f"unsupported protocol {info.protocol_name!r} level {info.protocol_level}")
            return
        if info.reserved_flag:
            raise ProtocolError("CONNECT reserved flag set")  # [MQTT-3.1.2-3]
        if info.client_id_was_empty and not info.clean_session:
            self.write(codec.encode_connack(CONNACK_IDENTIFIER_REJECTED))  # [MQTT-3.1.3-8]
            self.abort("empty client id without clean session")
            return
        client_id = info.client_id or f"bayou-{id(self):x}"
        self.client_id = client_id
        self.keep_alive = info.keep_alive
        self.node.client_connected(self)
        self.write(codec.encode_connack(CONNACK_ACCEPTED, session_present=False))

    def _on_publish(self, pkt: codec.Packet) -> None:
        topic, qos, pid, retain, _dup, payload = codec.decode_publish(pkt.flags, pkt.body)
        try:
            validate_topic_name(topic)
        except TopicError as exc:
            raise ProtocolError(str(exc)) from exc
        if qos > MAX_QOS:
            raise ProtocolError("QoS 2 publishes are not supported by this node yet")
        assert self.client_id is not None
        route = self.node.router.route(topic)
        self.node.count_in(route.kafka_topic)
        headers = self.node.headers_for(topic, qos, retain, self.client_id)
        if qos == 0:
            self.node.ingest.submit(route.kafka_topic, route.key, payload, headers, None)
        else:
            slot = [pid, 0]  # [packet id, state: 0 waiting, 1 acked]
            self._acks.append(slot)
            self.node.ingest.submit(
                route.kafka_topic, route.key, payload, headers, lambda exc: self._acked(slot, exc)
            )
        self.node.throttle(self)

    def _acked(self, slot: list[int], exc: BaseException | None) -> None:
        if self.closed:
            return
        if exc is not None:
            # Not in Kafka: no PUBACK. Closing makes the client resend on reconnect.
            log.warning(
                "client %s: Kafka write failed (%s); closing, no PUBACK", self.client_id, exc
            )
            self.abort("Kafka write failed", count=False)
            return
        slot[1] = 1
        if not self._flush_scheduled:
            # Acks arrive in batches; one write per connection per batch, not per PUBACK.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_acks)

    def _flush_acks(self) -> None:
        self._flush_scheduled = False
        acks = self._acks
        out = bytearray()
        while acks and acks[0][1]:
            out += codec.encode_ack(codec.PUBACK, acks.popleft()[0])
        if out:
            self.write(bytes(out))

    def _on_subscribe(self, pkt: codec.Packet) -> None:
        pid, topics = decode_subscribe(pkt.flags, pkt.body)
        codes: list[int] = []
        for filt, qos in topics:
            if qos > 2:
                raise ProtocolError("SUBSCRIBE with QoS 3")  # [MQTT-3-8.3-4]
            try:
                validate_topic_filter(filt)
            except TopicError:
                codes.append(0x80)
                continue
            granted = min(qos, MAX_QOS)
            self.filters[filt] = granted
            self.node.subscriptions.subscribe(self, filt, granted)
            codes.append(granted)
        self.write(codec.encode_suback(pid, codes))

    def _on_unsubscribe(self, pkt: codec.Packet) -> None:
        pid, topics = decode_unsubscribe(pkt.flags, pkt.body)
        for filt in topics:
            if self.filters.pop(filt, None) is not None:
                self.node.subscriptions.unsubscribe(self, filt)
        self.write(codec.encode_ack(codec.UNSUBACK, pid))

    # outbound ---------------------------------------------------------------------------

    def next_packet_id(self) -> int:
        """A packet id for an outbound QoS 1 publish (1..65535, wrapping)."""
        self._next_pid = self._next_pid % 65535 + 1
        return self._next_pid

    def write(self, data: bytes) -> None:
        """Send bytes unless the connection is closing."""
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        """Close after pending writes are flushed."""
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self, reason: str, count: bool = True) -> None:
        """Close this one client because of ``reason``; log one line."""
        if self.closed:
            return
        if count:
            PROTOCOL_ERRORS_TOTAL.labels(reason.split(":")[0][:40]).inc()
            log.warning("closing client %s (%s): %s", self.client_id or "-", self.peer, reason)
        self.close()
