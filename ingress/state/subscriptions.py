"""Which connections on this node subscribe to what, and who matches a topic.

Connections subscribe here (:mod:`ingress.wire.connection`); the outbound path asks it for the
subscribers of each record's MQTT topic, live and in catch-up alike: the node's one table,
matching with :func:`ingress.contract.topics.matches`.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from ingress.contract.topics import matches

C = TypeVar("C")


class SubscriptionTable(Generic[C]):
    """Filter → {subscriber: granted qos}, with a per-topic match cache.

    Devices publish to a small set of topics over and over, so the cache turns fan-out
    matching into one dict lookup; any subscribe or unsubscribe clears it.
    """

    _CACHE_MAX = 50_000

    def __init__(self) -> None:
        self._by_filter: dict[str, dict[C, int]] = {}
        self._cache: dict[str, list[tuple[C, int]]] = {}
        self.count = 0

    def subscribe(self, sub: C, filt: str, qos: int) -> None:
        """Add or replace ``sub``'s subscription to ``filt`` [MQTT-3.8.4-3]."""
        subs = self._by_filter.setdefault(filt, {})
        if sub not in subs:
            self.count += 1
        subs[sub] = qos
        self._cache.clear()

    def unsubscribe(self, sub: C, filt: str) -> bool:
        """Remove one subscription; True if it existed."""
        subs = self._by_filter.get(filt)
        if not subs or sub not in subs:
            return False
        del subs[sub]
        self.count -= 1
        if not subs:
            del self._by_filter[filt]
        self._cache.clear()
        return True

    def remove_all(self, sub: C, filters: list[str]) -> None:
        """Drop every listed subscription of ``sub`` (on disconnect)."""
        for f in filters:
            self.unsubscribe(sub, f)

    def match(self, topic: str) -> list[tuple[C, int]]:
        """Subscribers matching ``topic``, each once, with the highest granted qos."""
        hit = self._cache.get(topic)
        if hit is not None:
            return hit
        best: dict[C, int] = {}
        for filt, subs in self._by_filter.items():
            if matches(filt, topic):
                for s, q in subs.items():
                    if best.get(s, -1) < q:
                        best[s] = q
        result = list(best.items())
        if len(self._cache) >= self._CACHE_MAX:
            self._cache.clear()
        self._cache[topic] = result
        return result
