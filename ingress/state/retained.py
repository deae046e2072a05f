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
a topic with some, lets only the newest write count. (A QoS 0 write counts at once; if Kafka
then refuses it, this node keeps it until the next write of that topic: QoS 0 promises
nothing, and the failure is counted in `bayou_ingress_produce_failures_total`.)
"""

from __future__ import annotations

from collections import deque

from ingress.contract import H_MQTT_QOS, header
from ingress.contract.topics import matches
from ingress.metrics import RETAINED
from kafkaio.reader import Record


class LocalWrite:
    """One retained write of this node that its reader has not read back yet."""

    __slots__ = ("payload", "qos")

    def __init__(self, payload: bytes, qos: int) -> None:
        self.payload = payload
        self.qos = qos


class RetainedStore:
    """MQTT topic → (payload, qos) of its retained message."""

    def __init__(self) -> None:
        self._by_topic: dict[str, tuple[bytes, int]] = {}
        # Topic → this node's writes not yet read back, oldest first.
        self._unread: dict[str, deque[LocalWrite]] = {}
        # Topic → the last record read while writes of ours were unread: it counts if those
        # writes fail.
        self._skipped: dict[str, tuple[bytes, int]] = {}

    def __len__(self) -> int:
        return len(self._by_topic)

    def put(self, topic: str, payload: bytes | None, qos: int) -> None:
        """Store or (empty payload) clear the retained message of ``topic`` [MQTT-3.3.1-10]."""
        if payload:
            self._by_topic[topic] = (payload, qos)
        else:
            self._by_topic.pop(topic, None)
        RETAINED.set(len(self._by_topic))

    def written(self, topic: str, payload: bytes, qos: int) -> LocalWrite:
        """Note a write of this node, just before it is submitted to Kafka."""
        w = LocalWrite(payload, qos)
        self._unread.setdefault(topic, deque()).append(w)
        return w

    def acknowledged(self, topic: str, w: LocalWrite) -> None:
        """Kafka has ``w``: apply it, unless a newer write exists or the reader passed it."""
        unread = self._unread.get(topic)
        if unread and unread[-1] is w:
            self.put(topic, w.payload, w.qos)

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
            unread = self._unread.get(topic)
            if not unread:
                self.put(topic, value, qos)
                continue
            # Ours land in the log in the order they were written, so a record of ours read
            # back means every older unread one failed. Which of ours it is cannot be told
            # among equal values: taking the newest never leaves one behind that was read.
            mine = max((i for i, w in enumerate(unread) if w.payload == value), default=None)
            if mine is not None:
                for _ in range(mine + 1):
                    unread.popleft()
            if unread:
                # Our unread writes are newer in the log: they win.
                self._skipped[topic] = (value, qos)
                continue
            del self._unread[topic]
            self._skipped.pop(topic, None)
            self.put(topic, value, qos)

    def matching(self, filt: str) -> list[tuple[str, bytes, int]]:
        """Retained messages whose topic matches subscription filter ``filt``."""
        if "+" not in filt and "#" not in filt:
            hit = self._by_topic.get(filt)
            return [(filt, *hit)] if hit else []
        return [(t, p, q) for t, (p, q) in self._by_topic.items() if matches(filt, t)]
