"""Dropping duplicate agent results before they reach a device.

An agent worker that dies after producing a result but before committing its input can
produce the same result again after a rebalance. Agents give each result a deterministic id
(``bayou.result_id``: key and window bounds, alert rule and firing time...), and a node drops
a record whose id it has already delivered from another Kafka record. The same record read
again (a resumed session catching up) is not a duplicate.
"""

from __future__ import annotations

from collections import OrderedDict

from ingress.contract import H_MQTT_TOPIC, H_RESULT_ID, Headers, header
from ingress.metrics import DUPLICATES_DROPPED_TOTAL

Coordinates = tuple[str, int, int]


class ResultDedup:
    """Remembers the last ``capacity`` result ids and the record that carried each."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[bytes, Coordinates] = OrderedDict()

    def is_duplicate(self, headers: Headers, where: Coordinates) -> bool:
        """True if another record already carried this record's result id."""
        rid = header(headers, H_RESULT_ID)
        if rid is None:
            return False
        # Ids are unique per MQTT topic: two windows of one app may share key and bounds.
        rid += b"\x00" + (header(headers, H_MQTT_TOPIC) or b"")
        first = self._seen.get(rid)
        if first is None:
            self._seen[rid] = where
            if len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
            return False
        if first == where:
            return False
        DUPLICATES_DROPPED_TOTAL.inc()
        return True
