"""Connection-level limits as plain objects: the token bucket, the bounded table of buckets per
source address, the CONNECT deadlines and admission (no sockets; time is passed in)."""

from __future__ import annotations

import math
import tracemalloc

from ingress.metrics import LIMIT_REFUSALS_TOTAL
from ingress.security.config import LimitsConfig
from ingress.security.limits import (
    ConnectDeadlines,
    ConnectionLimits,
    SourceRateLimiter,
    TokenBucket,
    source_key,
)
from ingress.wire.outbound_state import OutboundState


def refusals(limit: str) -> float:
    return float(LIMIT_REFUSALS_TOTAL.labels(limit)._value.get())


def test_bucket_starts_full_and_refills_at_its_rate() -> None:
    b = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [b.take(now=100.0) for _ in range(4)] == [True, True, True, False]
    assert b.wait_time(1, now=100.0) == 0.5
    assert not b.take(now=100.4)
    assert b.take(now=100.5)
    # Never more than the burst saved, however long it waited.
    assert b.take(3, now=1000.0)
    assert not b.take(now=1000.0)


def test_bucket_take_n_and_wait_time() -> None:
    b = TokenBucket(10.0, 5, now=0.0)
    assert b.take(4, 0.0)
    assert not b.take(2, 0.0)  # nothing taken when refused
    assert b.take(1, 0.0)
    assert b.wait_time(5, 0.0) == 0.5
    assert b.wait_time(6, 0.0) == math.inf  # more than the burst never fits
    assert b.full_at() == 0.5


def test_bucket_clock_going_back_adds_nothing() -> None:
    b = TokenBucket(1.0, 1, now=10.0)
    assert b.take(now=10.0)
    assert not b.take(now=5.0)
    assert b.take(now=11.0)


def test_source_key_is_the_address_not_the_port() -> None:
    assert source_key("192.0.2.7") == "192.0.2.7"
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"
    # One host usually owns a whole IPv6 /64: cycling addresses inside it is free.
    assert source_key("2001:db8:1:2::5") == source_key("2001:db8:1:2:ffff::1")
    assert source_key("2001:db8:1:2::5") != source_key("2001:db8:1:3::5")
    assert source_key("fe80::1%eth0") == "fe80::/64"
    assert source_key("not an ip") == "not an ip"


def test_rate_per_source_is_per_address() -> None:
    lim = SourceRateLimiter(rate=1.0, burst=2)
    assert lim.allow("a", 0.0) and lim.allow("a", 0.0)
    assert not lim.allow("a", 0.0)
    assert lim.allow("b", 0.0)  # another address has its own bucket
    assert lim.allow("a", 1.0)


def test_full_buckets_are_forgotten() -> None:
    lim = SourceRateLimiter(rate=10.0, burst=5)
    for i in range(100):
        lim.allow(f"10.0.0.{i}", float(i) / 100)
    assert len(lim) == 100
    lim.prune(0.5)  # those used before 0.4 are full again (one token back in 0.1 s)
    assert 0 < len(lim) <= 60
    lim.prune(1.2)
    assert len(lim) == 0


def test_addresses_cycling_cannot_grow_the_table() -> None:
    """A million source addresses at one instant (nothing refills): the table stays at its cap,
    and its memory with it."""
    lim = SourceRateLimiter(rate=1.0, burst=5, max_sources=1000)
    tracemalloc.start()
    try:
        for i in range(20_000):
            assert lim.allow(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 0.0)
        first, _ = tracemalloc.get_traced_memory()
        for i in range(20_000, 200_000):
            lim.allow(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 0.0)
        second, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(lim) == 1000
    assert second - first < 64 * 1024


def test_evicted_source_starts_full_again() -> None:
    lim = SourceRateLimiter(rate=0.001, burst=1, max_sources=2)
    assert lim.allow("a", 0.0)
    assert not lim.allow("a", 0.0)
    lim.allow("b", 0.0)
    lim.allow("c", 0.0)  # evicts a, the least recently used
    assert lim.allow("a", 0.0)


def test_connect_deadlines_oldest_first() -> None:
    d: ConnectDeadlines[str] = ConnectDeadlines(timeout=3.0)
    for i, name in enumerate("abcd"):
        d.opened(name, float(i))
    d.done("b")  # CONNECT completed
    assert d.expired(4.0) == ["a"]  # c opened at 2.0, d at 3.0: not yet
    assert d.expired(4.0) == []
    assert d.expired(6.0) == ["c", "d"]
    assert len(d) == 0


def test_admission_max_connections_and_rate() -> None:
    limits: ConnectionLimits[int] = ConnectionLimits(
        LimitsConfig(max_connections=3, connect_rate_per_source=1.0, connect_burst_per_source=2)
    )
    before_max, before_rate = refusals("max_connections"), refusals("connect_rate")
    assert limits.admit(1, "127.0.0.1", 0, 0.0) is None
    assert limits.admit(2, "127.0.0.1", 1, 0.0) is None
    assert limits.admit(3, "127.0.0.1", 2, 0.0) == "connect_rate"
    assert limits.admit(4, "127.0.0.2", 3, 0.0) == "max_connections"
    assert limits.admit(5, "127.0.0.2", 2, 0.0) is None
    assert refusals("max_connections") == before_max + 1
    assert refusals("connect_rate") == before_rate + 1


def test_admission_without_limits_admits_everything() -> None:
    limits: ConnectionLimits[int] = ConnectionLimits(LimitsConfig(max_connections=0))
    assert all(limits.admit(i, "127.0.0.1", i, 0.0) is None for i in range(10_000))
    assert limits.rate is None


def test_connect_timeout_sweep_counts() -> None:
    limits: ConnectionLimits[int] = ConnectionLimits(LimitsConfig(connect_timeout_seconds=2.0))
    before = refusals("connect_timeout")
    for i in range(5):
        limits.admit(i, "127.0.0.1", i, 0.0)
    limits.connected(0)
    assert limits.sweep(1.0) == []
    assert limits.sweep(2.5) == [1, 2, 3, 4]
    assert refusals("connect_timeout") == before + 4


def test_blocked_writes_fill_the_window() -> None:
    out = OutboundState(max_inflight=10)
    assert not out.window_full
    assert not out.writes_paused(True)
    assert out.window_full  # catch-up stops for it as for a full window
    out.start_catch_up({}, {("t", 0): 5}, [])
    assert out.writes_paused(False)  # drained while catching up: wake catch-up
    assert not out.window_full


def test_a_resumed_sessions_resends_count_against_the_window_once_sent() -> None:
    """Reserved packet ids (not resent yet) keep new messages back but leave room for
    resends; each resend takes a place, an acknowledgement gives one back [MQTT-4.9.0-2]."""
    out = OutboundState(max_inflight=2)
    out.start_catch_up({}, {("t", 0): 9}, [("t", 0, o, o + 1, 1, False) for o in range(4)])
    assert out.window_full and out.room_to_resend  # 4 reserved, none on the wire
    out.retrack(1, "t", 0, 0, 1, False)
    out.retrack(2, "t", 0, 1, 1, False)
    assert not out.room_to_resend  # two on the wire: the client's maximum
    assert out.complete(1)  # wake catch-up: room for the next resend
    assert out.room_to_resend and out.window_full
    out.complete(4)  # acknowledged before its resend: no longer reserved
    assert out.reserved == {3}
    assert sorted(p[3] for p in out.pending()) == [2, 3]
