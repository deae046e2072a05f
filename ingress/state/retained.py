"""Retained messages, materialised from the compacted Kafka topic ``bayou.retained``.

Every node reads the whole topic at start (last value per MQTT topic wins; an empty value is
a tombstone) and keeps reading, so a retained message published on any node is delivered on
every node, and survives a restart of all nodes (DESIGN §2). The inbound path writes them
(:mod:`ingress.inbound`); a new subscription gets the matching ones after its SUBACK.

A node's own writes reach its store twice: at once (QoS 0) or on Kafka's acknowledgement
(QoS 1/2), and again when its reader gets to them. Either path alone can be late: the
acknowledgement of a set can arrive after a later clear was applied, or after the reader
already applied both; the reader can hand over an older record after a newer local write.
So the store remembers the writes the reader has not seen yet (:class:`LocalWrite`) and, for
a topic with some, lets only the newest applied write count. Each write carries its id in
header ``bayou.retained_write`` (a random token of this process and a number), so a record
read back is known to be this write, not an equal one of another node or an earlier run.
(A QoS 0 write counts at once; if Kafka then refuses it, this node keeps it until the next
write of that topic: QoS 0 promises nothing, and the failure is counted in
`bayou_ingress_produce_failures_total`.)
"""

from __future__ import annotations

import itertools
import os
from collections import deque

from ingress.contract import H_MQTT_QOS, H_RETAINED_WRITE, header, property_headers
from ingress.contract.topics import matches
from ingress.metrics import RETAINED
from kafkaio.reader import Record

# An MQTT 5 retained message's properties, as the headers that carry them (() for none).
Extra = tuple[tuple[str, bytes], ...]
# What a subscription gets of a retained message: topic, payload, QoS, properties.
Retained = tuple[str, bytes, int, Extra]


class LocalWrite:
    """One retained write of this node that its reader has not read back yet."""

    __slots__ = ("applied", "extra", "id", "payload", "qos")

    def __init__(self, write_id: bytes, payload: bytes, qos: int, extra: Extra = ()) -> None:
        self.id = write_id
        self.payload = payload
        self.qos = qos
        self.extra = extra
        # In the store already: made at QoS 0, or acknowledged.
        self.applied = False


class RetainedStore:
    """MQTT topic → (payload, qos, MQTT 5 properties) of its retained message."""

    def __init__(self) -> None:
        self._by_topic: dict[str, tuple[bytes, int, Extra]] = {}
        # Topic → this node's writes not yet read back, oldest first.
        self._unread: dict[str, deque[LocalWrite]] = {}
        # Topic → the last record read while writes of ours were unread: it counts if those
        # writes fail.
        self._skipped: dict[str, tuple[bytes, int, Extra]] = {}
        # Random, not the node id: a restarted node must not take its last run's records
        # for writes of this one.
        self._token = os.urandom(8).hex().encode()
        self._numbers = itertools.count()

    def __len__(self) -> int:
        return len(self._by_topic)

    def put(self, topic: str, payload: bytes | None, qos: int, extra: Extra = ()) -> None:
        """Store or (empty payload) clear the retained message of ``topic`` [MQTT-3.3.1-10]."""
        if payload:
            self._by_topic[topic] = (payload, qos, extra)
        else:
            self._by_topic.pop(topic, None)
        RETAINED.set(len(self._by_topic))

    def written(self, topic: str, payload: bytes, qos: int, extra: Extra = ()) -> LocalWrite:
        """Note a write of this node, just before it is submitted to Kafka with
        ``(H_RETAINED_WRITE, w.id)`` among its headers."""
        w = LocalWrite(b"%s:%d" % (self._token, next(self._numbers)), payload, qos, extra)
        self._unread.setdefault(topic, deque()).append(w)
        return w

    def apply_now(self, topic: str, w: LocalWrite) -> None:
        """Apply ``w`` before Kafka has it (QoS 0: nobody waits for Kafka)."""
        w.applied = True
        self.put(topic, w.payload, w.qos, w.extra)

    def acknowledged(self, topic: str, w: LocalWrite) -> None:
        """Kafka has ``w``: apply it, unless a newer write is applied or the reader passed it.

        A newer write still on its way does not hold it back: its publisher has no PUBACK
        yet, and this one's publisher must find what it was acknowledged.
        """
        newer = False
        for u in reversed(self._unread.get(topic, ())):
            if u is w:
                if not newer:
                    w.applied = True
                    self.put(topic, w.payload, w.qos, w.extra)
                return
            newer = newer or u.applied

    def failed(self, topic: str, w: LocalWrite) -> None:
        """Kafka refused ``w``: the reader will never see it."""
        unread = self._unread.get(topic)
        if unread is None or w not in unread:
            return
        unread.remove(w)
        if not unread:
            del self._unread[topic]
            skipped = self._skipped.pop(topic, None)
            if skipped is not None:
                self.put(topic, *skipped)

    def apply(self, records: list[Record]) -> None:
        """Apply records of the retained topic, in log order."""
        for rec in records:
            if rec.key is None:
                continue
            topic = rec.key.decode("utf-8", "replace")
            qos = int(header(rec.headers, H_MQTT_QOS) or b"0")
            value = rec.value or b""
            extra = property_headers(rec.headers)
            unread = self._unread.get(topic)
            if not unread:
                self.put(topic, value, qos, extra)
                continue
            write_id = header(rec.headers, H_RETAINED_WRITE)
            mine = next((i for i, w in enumerate(unread) if w.id == write_id), None)
            if mine is not None:
                # Ours land in the log in the order they were written: every older unread
                # one failed (its report is still on its way).
                for _ in range(mine + 1):
                    unread.popleft()
            if unread:
                # Our unread writes are newer in the log: they win.
                self._skipped[topic] = (value, qos, extra)
                continue
            del self._unread[topic]
            self._skipped.pop(topic, None)
            self.put(topic, value, qos, extra)

    def matching(self, filt: str) -> list[Retained]:
        """Retained messages whose topic matches subscription filter ``filt``."""
        if "+" not in filt and "#" not in filt:
            hit = self._by_topic.get(filt)
            return [(filt, *hit)] if hit else []
        return [(t, p, q, x) for t, (p, q, x) in self._by_topic.items() if matches(filt, t)]
