"""Where an outbound record leaves for a device: the one send routine of the node.

Live delivery (:mod:`ingress.outbound.live`) and catch-up (:mod:`ingress.outbound.catch_up`)
both read a record here once (:meth:`Sender.read`: one pass over its headers, duplicate results
dropped, the MQTT topic from the ``mqtt.topic`` header or the egress rules, its subscribers
from the node's one subscription table) and send it through
a :class:`Batch`: the PUBLISH head is encoded once per record and QoS, each QoS 1/2 message is
recorded in its connection's :class:`~ingress.wire.outbound_state.OutboundState`, and each
connection gets one socket write per batch (a write per message cost ~15 % CPU). An outbound
QoS 2 message of a persistent session goes out only once the session record naming it is in
Kafka, so a resumed session can never receive it twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from ingress.contract import (
    H_COMMAND_ID,
    H_INGRESS_TS,
    H_MQTT_CLIENT_ID,
    H_MQTT_EXPIRES_AT,
    H_MQTT_QOS,
    H_MQTT_RETAIN,
    H_MQTT_TOPIC,
    H_RESULT_ID,
    MQTT5_PROPERTY_HEADERS,
    QOS_OF_VALUE,
    header,
    is_user_property,
)
from ingress.outbound.dedup import ResultDedup
from ingress.routing.rules import EgressRouter
from ingress.security.guard import denied
from ingress.state.sessions import Pending
from ingress.wire import codec
from ingress.wire.connection import MQTTConnection
from ingress.wire.packets5 import NO_PROPERTIES, encode_publish5, publish5_head
from ingress.wire.properties import Properties
from ingress.wire.v5 import V5Client
from ingress.wire.v5_headers import encode_block, outbound_properties, publish_block
from kafkaio.reader import Record

# What an MQTT 5 receiver's PUBLISH is built from, once per record: its properties (without
# subscription identifiers), their encoded block, the publisher's client id, the RETAIN flag.
Base5 = tuple[Properties, bytes, bytes | None, bool]

# An outbound record as read once for all its receivers: (MQTT topic, QoS of the record,
# payload, bayou.ingress_ts header or None, from a client: stamped by a node on a client's
# publish, bayou.command_id header or None). A plain tuple: it is built for every record
# delivered, on the hot path.
Message = tuple[str, int, bytes, bytes | None, bool, bytes | None]

# The connections subscribed to an MQTT topic, each with its granted QoS.
Targets = list[tuple[MQTTConnection, int]]
Match = Callable[[str], Targets]
# Save the connection's session, then release its held writes (QoS 2 of a persistent session).
Persist = Callable[[MQTTConnection], None]


class Sender:
    """Reads outbound records and starts batches of PUBLISH packets for them."""

    def __init__(
        self,
        egress: EgressRouter,
        dedup: ResultDedup,
        persist: Persist,
        write_bound: int = 4 * 1024 * 1024,
        acl_on: bool = False,
    ) -> None:
        self.egress = egress
        self.dedup = dedup
        self.persist = persist
        # An ACL file is configured: each receiver's receive rules are checked per record.
        self.acl_on = acl_on
        # max_write_buffer: a batch writes what it holds once it holds this many bytes.
        self.write_bound = write_bound

    def read(self, rec: Record, match: Match) -> tuple[Message, Targets] | None:
        """What ``rec`` sends and to whom (``match`` of its MQTT topic), or None: a duplicate
        result, no MQTT topic for it, or nobody to send it to.

        Most records a node reads have no subscriber on it (every publish comes back through
        the delivery topics), so nothing is built for those.
        """
        topic_b = qos_b = ts_b = rid = cid_b = exp_b = cmd_b = None
        for k, v in rec.headers:
            if k == H_MQTT_TOPIC:
                topic_b = v
            elif k == H_MQTT_QOS:
                qos_b = v
            elif k == H_INGRESS_TS:
                ts_b = v
            elif k == H_RESULT_ID:
                rid = v
            elif k == H_MQTT_CLIENT_ID:
                cid_b = v
            elif k == H_MQTT_EXPIRES_AT:
                exp_b = v
            elif k == H_COMMAND_ID:
                cmd_b = v
        if exp_b is not None and _expired(exp_b):
            # MQTT 5 Message Expiry: not delivered once the interval is over [MQTT-3.3.2-5].
            return None
        # Only agents' results are deduplicated: a client's publish carrying a result id (it
        # cannot set one over MQTT 3.1.1, but a Kafka producer could) must not be able to
        # suppress the real result [issue 9: no client forges what only agents write].
        if (
            rid is not None
            and cid_b is None
            and self.dedup.is_duplicate(rec.headers, (rec.topic, rec.partition, rec.offset))
        ):
            return None
        if topic_b is not None:
            topic = topic_b.decode("utf-8", "replace")
            targets = match(topic)
            if not targets:
                return None
            qos = QOS_OF_VALUE.get(qos_b or b"0", 0)
        else:
            egress = self.egress.route(rec.topic, rec.key)
            if egress is None:
                return None
            topic = egress.mqtt_topic
            targets = match(topic)
            if not targets:
                return None
            qos = egress.qos if qos_b is None else QOS_OF_VALUE.get(qos_b, 0)
        if self.acl_on:
            targets = readable(targets, topic)
            if not targets:
                return None
        return (topic, qos, rec.value or b"", ts_b, cid_b is not None, cmd_b), targets

    def topic_of(self, rec: Record) -> str | None:
        """The MQTT topic of a record sent before (a resend: no duplicate check, no match)."""
        topic_b = header(rec.headers, H_MQTT_TOPIC)
        if topic_b is not None:
            return topic_b.decode("utf-8", "replace")
        egress = self.egress.route(rec.topic, rec.key)
        return None if egress is None else egress.mqtt_topic

    def batch(self) -> Batch:
        """A new batch of writes, sent by :meth:`Batch.flush`."""
        return Batch(self.persist, self.write_bound)


def readable(targets: Targets, topic: str) -> Targets:
    """The receivers whose ACL lets them receive a message on ``topic`` (checked at delivery,
    so a subscription to a wide filter never carries a topic the ACL keeps from them)."""
    out: Targets = []
    for target in targets:
        acl = target[0].acl
        if acl is None or acl.receive(topic):
            out.append(target)
        else:
            denied("receive")
    return out


def _base5(headers: list[tuple[str, bytes]]) -> Base5:
    """What every MQTT 5 receiver of a record shares, in one pass over its headers: most
    records carry no property at all, and then no Properties are built or encoded."""
    publisher = None
    retain = False
    props = False
    for k, v in headers:
        if k == H_MQTT_CLIENT_ID:
            publisher = v
        elif k == H_MQTT_RETAIN:
            retain = v == b"1"
        elif not props and (k in MQTT5_PROPERTY_HEADERS or is_user_property(k)):
            props = True
    if not props:
        return Properties(), NO_PROPERTIES, publisher, retain
    p = outbound_properties(headers, time.time_ns() // 1_000_000)
    block = encode_block(p)
    return (p if block is not NO_PROPERTIES else Properties()), block, publisher, retain


def _expired(exp_b: bytes) -> bool:
    try:
        return int(exp_b) <= time.time_ns() // 1_000_000
    except ValueError:
        return False


class Batch:
    """PUBLISH packets collected per connection, written once per connection on flush."""

    __slots__ = (
        "_base5", "_bound", "_bytes", "_counts", "_heads", "_heads5", "_msg", "_persist", "_qos2",
        "out", "resent", "sent",
    )  # fmt: skip

    def __init__(self, persist: Persist, bound: int) -> None:
        self.out: dict[MQTTConnection, list[bytes]] = {}
        # New messages sent, per Kafka topic read from by QoS, and messages sent again.
        self.sent: dict[str, list[int]] = {}
        self._counts = [0, 0, 0]
        self.resent = 0
        self._persist = persist
        self._qos2: set[MQTTConnection] = set()
        self._msg: Message | None = None
        self._heads: list[bytes | None] = [None, None, None]
        self._base5: Base5 | None = None
        # MQTT 5 heads of the current record by (QoS, RETAIN), for receivers whose PUBLISH
        # carries the shared property block (no subscription identifier of their own).
        self._heads5: dict[tuple[int, bool], bytes] = {}
        self._bound = bound
        self._bytes = 0

    @property
    def sent_total(self) -> int:
        """New messages sent, whatever the topic and QoS."""
        return sum(sum(c) for c in self.sent.values())

    def added(self, nbytes: int) -> None:
        """A message of ``nbytes`` went to this batch's connections; beyond the write bound
        what is collected is written now, so a connection that does not read is paused (its
        transport over ``max_write_buffer``) before more is collected for it: one batch
        of a fetch can hold 5,000 large records."""
        self._bytes += nbytes
        if self._bytes > self._bound:
            self.flush()

    def send(self, conn: MQTTConnection, rec: Record, msg: Message, qos: int) -> None:
        """Send ``msg`` (read from ``rec``) to ``conn`` at ``qos``, a new packet id for 1/2."""
        if msg is not self._msg:
            self._msg = msg
            self._heads = [None, None, None]
            self._base5 = None
            self._heads5 = {}
            counts = self.sent.get(rec.topic)
            if counts is None:
                counts = self.sent[rec.topic] = [0, 0, 0]
            self._counts = counts
        if conn.v5 is not None:
            self._send5(conn, conn.v5, rec, msg, qos)
            return
        head = self._heads[qos]
        if head is None:
            head = self._heads[qos] = codec.publish_parts(msg[0], msg[2], qos)[0]
        parts = self.out.get(conn)
        if parts is None:
            parts = self.out[conn] = []
        if qos:
            pid = conn.outbound.track(rec.topic, rec.partition, rec.offset, qos)
            if (
                msg[5] is not None
            ):  # a command: its delivery is reported (ingress.contract.commands)
                conn.outbound.commands[pid] = msg[5]
            parts += (head, pid.to_bytes(2, "big"), msg[2])
            if qos == 2 and conn.persistent:
                self._qos2.add(conn)
        else:
            parts += (head, msg[2])
        self._counts[qos] += 1

    def _send5(
        self, conn: MQTTConnection, v5: V5Client, rec: Record, msg: Message, qos: int
    ) -> None:
        """``send`` to an MQTT 5 client: the record's properties, the identifiers of its
        matching subscriptions, No Local, Retain As Published, its Maximum Packet Size."""
        topic, payload = msg[0], msg[2]
        base = self._base5
        if base is None:
            base = self._base5 = _base5(rec.headers)
        props, block, publisher, retain = base
        shared = True  # the record's own property block, no identifier added
        ids: list[int] = []
        if v5.options:
            own = publisher == conn.client_id_utf8
            if own and v5.local_only(topic, conn.filters):
                return  # No Local [MQTT-3.8.3-3]
            ids = v5.identifiers(topic, own)  # a No Local subscription did not deliver it
            retain = retain and v5.retain_as_published(topic, conn.filters)
        else:
            retain = False  # live delivery clears RETAIN unless asked [MQTT-3.3.1-12]
        alias, known = v5.alias_out(topic) if v5.topic_alias_maximum else (0, False)
        wire_topic = "" if known else topic  # a known alias replaces the topic [MQTT-3.3.2-12]
        if ids or alias:  # [MQTT-3.3.4-3], §3.3.2.3.4
            shared = False
            block = encode_block(
                replace(props, subscription_identifiers=ids, topic_alias=alias or None)
            )
        if not v5.fits(wire_topic, payload, block, qos):
            return  # larger than the client takes: not sent [MQTT-3.1.2-25]
        if alias and not known:
            v5.out_aliases[topic] = alias  # the client learns it from this PUBLISH
        head = self._heads5.get((qos, retain)) if shared else None
        if head is None:
            head = publish5_head(wire_topic.encode(), qos, block, len(payload))[0]
            if retain:
                head = bytes((head[0] | 0x01,)) + head[1:]
            if shared:
                self._heads5[(qos, retain)] = head
        parts = self.out.get(conn)
        if parts is None:
            parts = self.out[conn] = []
        if qos:
            pid = conn.outbound.track(rec.topic, rec.partition, rec.offset, qos)
            if msg[5] is not None:
                conn.outbound.commands[pid] = msg[5]
            parts += (head, pid.to_bytes(2, "big"), block, payload)
            if qos == 2 and conn.persistent:
                self._qos2.add(conn)
        else:
            parts += (head, block, payload)
        self._counts[qos] += 1

    def send_shared(
        self, conn: MQTTConnection, rec: Record, msg: Message, qos: int, filt: str
    ) -> int | None:
        """Send ``msg`` to the member shared subscription ``filt`` chose; its packet id (0 for
        QoS 0), None if it is larger than the member takes.

        A QoS 1 message is tracked outside the session (it is the group's to send again if
        the member goes); a QoS 2 one in it, so a resumed session completes it [MQTT-4.8.2-4].
        The PUBLISH carries the shared subscription's identifier only.
        """
        topic, payload = msg[0], msg[2]
        v5 = conn.v5
        if v5 is None:
            head = codec.publish_parts(topic, payload, qos)[0]
            block = b""
        else:
            props, block, _, retain = _base5(rec.headers)
            o = v5.options.get(filt)
            if o is not None and o.identifier is not None:
                block = encode_block(replace(props, subscription_identifiers=[o.identifier]))
            if not v5.fits(topic, payload, block, qos):
                return None  # [MQTT-3.1.2-25]
            head = publish5_head(topic.encode(), qos, block, len(payload))[0]
            if retain and o is not None and o.retain_as_published:
                head = bytes((head[0] | 0x01,)) + head[1:]
        parts = self.out.get(conn)
        if parts is None:
            parts = self.out[conn] = []
        pid = 0
        if qos:
            pid = conn.outbound.track(rec.topic if qos == 2 else None, rec.partition,
                                      rec.offset, qos)  # fmt: skip
            if msg[5] is not None:
                conn.outbound.commands[pid] = msg[5]
            parts += (head, pid.to_bytes(2, "big"), block, payload)
            if qos == 2 and conn.persistent:
                self._qos2.add(conn)
        else:
            parts += (head, block, payload)
        counts = self.sent.get(rec.topic)
        if counts is None:
            counts = self.sent[rec.topic] = [0, 0, 0]
        counts[qos] += 1
        return pid

    def resend(self, conn: MQTTConnection, rec: Record, topic: str, p: Pending) -> None:
        """Send a message that was in flight again: same packet id, DUP set [MQTT-4.4.0-1];
        a released QoS 2 message gets its PUBREL again instead."""
        conn.outbound.retrack(p.packet_id, rec.topic, rec.partition, rec.offset, p.qos, p.released)
        command = header(rec.headers, H_COMMAND_ID)
        if command is not None and not p.released:
            conn.outbound.commands[p.packet_id] = command
        if p.qos == 2 and conn.persistent:
            self._qos2.add(conn)
        if p.released:
            data = codec.encode_ack(codec.PUBREL, p.packet_id)
        elif conn.v5 is not None:
            now_ms = time.time_ns() // 1_000_000
            block = publish_block(rec.headers, now_ms, conn.v5.identifiers(topic))
            data = encode_publish5(
                topic, rec.value or b"", p.qos, p.packet_id, False, block, dup=True
            )
        else:
            data = codec.encode_publish(topic, rec.value or b"", p.qos, p.packet_id)
            data = bytes((data[0] | 0x08,)) + data[1:]
        parts = self.out.get(conn)
        if parts is None:
            parts = self.out[conn] = []
        parts.append(data)
        self.resent += 1

    def flush(self) -> None:
        """Write each connection's packets in one write (QoS 2: after its session is saved)."""
        qos2 = self._qos2
        for conn, parts in self.out.items():
            if conn in qos2:
                conn.hold()
                conn.write(b"".join(parts))
                self._persist(conn)
            else:
                conn.write(b"".join(parts))
        self.out = {}
        self._qos2 = set()
        self._bytes = 0
