"""Retained messages, materialised from the compacted Kafka topic ``bayou.retained``.

Every node reads the whole topic at start (last value per MQTT topic wins; an empty value is
a tombstone) and keeps reading, so a retained message published on any node is delivered on
every node, and survives a restart of all nodes (DESIGN §2). The inbound path writes them
(:mod:`ingress.inbound`); a new subscription gets the matching ones after its SUBACK.
"""

from __future__ import annotations

from ingress.contract import H_MQTT_QOS, header
from ingress.contract.topics import matches
from ingress.metrics import RETAINED
from kafkaio.reader import Record


class RetainedStore:
    """MQTT topic → (payload, qos) of its retained message."""

    def __init__(self) -> None:
        self._by_topic: dict[str, tuple[bytes, int]] = {}

    def __len__(self) -> int:
        return len(self._by_topic)

    def put(self, topic: str, payload: bytes | None, qos: int) -> None:
        """Store or (empty payload) clear the retained message of ``topic`` [MQTT-3.3.1-10]."""
        if payload:
            self._by_topic[topic] = (payload, qos)
        else:
            self._by_topic.pop(topic, None)
        RETAINED.set(len(self._by_topic))

    def apply(self, records: list[Record]) -> None:
        """Apply records of the retained topic, in log order."""
        for rec in records:
            if rec.key is None:
                continue
            qos_b = header(rec.headers, H_MQTT_QOS)
            self.put(rec.key.decode("utf-8", "replace"), rec.value, int(qos_b or b"0"))

    def matching(self, filt: str) -> list[tuple[str, bytes, int]]:
        """Retained messages whose topic matches subscription filter ``filt``."""
        if "+" not in filt and "#" not in filt:
            hit = self._by_topic.get(filt)
            return [(filt, *hit)] if hit else []
        return [(t, p, q) for t, (p, q) in self._by_topic.items() if matches(filt, t)]
