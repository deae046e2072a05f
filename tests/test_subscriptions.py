"""The per-node subscription table, pure."""

from ingress.state.subscriptions import SubscriptionTable


def test_overlapping_subscriptions_deliver_once_at_highest_qos() -> None:
    t: SubscriptionTable[str] = SubscriptionTable()
    t.subscribe("c1", "a/#", 0)
    t.subscribe("c1", "a/+", 1)
    t.subscribe("c2", "a/b", 0)
    assert sorted(t.match("a/b")) == [("c1", 1), ("c2", 0)]


def test_unsubscribe_updates_cached_matches() -> None:
    t: SubscriptionTable[str] = SubscriptionTable()
    t.subscribe("c1", "a/#", 1)
    assert t.match("a/b") == [("c1", 1)]
    assert t.unsubscribe("c1", "a/#")
    assert t.match("a/b") == []
    assert t.count == 0


def test_resubscribe_replaces_qos() -> None:
    t: SubscriptionTable[str] = SubscriptionTable()
    t.subscribe("c1", "x", 1)
    t.subscribe("c1", "x", 0)
    assert t.match("x") == [("c1", 0)]
    assert t.count == 1
