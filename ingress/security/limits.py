"""Connection-level limits of a node: how many sockets, how fast per source, how long to CONNECT.

:class:`ConnectionLimits` is asked by the node when a socket arrives (before anything is read)
and swept by the node's once-a-second-ish sweep; each refusal is counted in
``bayou_limit_refusals_total{limit}`` with a fixed label (never client input).

:class:`TokenBucket` is written here rather than taken from a library: the rate limiters on
PyPI (``limits``, ``aiolimiter``, ``pyrate-limiter``) read their own clock, await, or keep keyed
storage with expiry threads; the node needs a few floats per bucket, an explicit ``now`` (tests,
one clock read per event) and a bounded table of its own — twenty lines.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from ingress.metrics import LIMIT_REFUSALS_TOTAL
from ingress.security.config import LimitsConfig

# The one label set of bayou_limit_refusals_total for connection-level limits.
MAX_CONNECTIONS = "max_connections"
CONNECT_RATE = "connect_rate"
CONNECT_TIMEOUT = "connect_timeout"
WRITE_BUFFER = "write_buffer"

# Source addresses tracked at most: an attacker cycling addresses evicts the least recently
# seen bucket (which then starts full again) instead of growing the table (~200 B a bucket).
MAX_SOURCES = 65_536

C = TypeVar("C", bound=Hashable)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; starts full at ``now``."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last = time.monotonic() if now is None else now

    def _refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def take(self, n: float = 1, now: float | None = None) -> bool:
        """Take ``n`` tokens if there are that many; False (and nothing taken) if not."""
        self._refill(time.monotonic() if now is None else now)
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def wait_time(self, n: float = 1, now: float | None = None) -> float:
        """Seconds until ``n`` tokens are there (0: now; ``inf``: more than ``burst``)."""
        self._refill(time.monotonic() if now is None else now)
        if self.tokens >= n:
            return 0.0
        if n > self.burst or self.rate <= 0:
            return math.inf
        return (n - self.tokens) / self.rate

    def full_at(self) -> float:
        """When the bucket is full again (as good as a new one, so it can be forgotten)."""
        if self.rate <= 0:
            return math.inf if self.tokens < self.burst else self.last
        return self.last + (self.burst - self.tokens) / self.rate


def source_key(host: str) -> str:
    """The address a connection-rate bucket is kept for: the IP (not the port); an IPv6
    address by its /64, which one host usually owns whole (cycling inside it is free)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False).network_address) + "/64"
    return str(ip)


class SourceRateLimiter:
    """A token bucket per source address, in a table that stays bounded.

    The table is kept in least-recently-used order: buckets that are full again are dropped
    from its old end (a full bucket is a new one), and beyond ``max_sources`` the least
    recently used one is evicted.
    """

    def __init__(self, rate: float, burst: int, max_sources: int = MAX_SOURCES) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: str, now: float) -> bool:
        """One new connection from ``source``: True if its bucket had a token."""
        buckets = self._buckets
        bucket = buckets.get(source)
        if bucket is None:
            if len(buckets) >= self.max_sources:
                self.prune(now)
                while len(buckets) >= self.max_sources:
                    buckets.popitem(last=False)
            bucket = buckets[source] = TokenBucket(self.rate, self.burst, now)
        else:
            buckets.move_to_end(source)
        return bucket.take(1, now)

    def prune(self, now: float) -> None:
        """Forget the buckets that are full again, from the least recently used on.

        Stops at the first one still filling: every bucket is full ``burst / rate`` seconds
        after its last use, so what stays behind it is at most that much older.
        """
        buckets = self._buckets
        while buckets:
            source, bucket = next(iter(buckets.items()))
            if bucket.full_at() > now:
                return
            del buckets[source]


class ConnectDeadlines(Generic[C]):
    """Sockets that have not completed CONNECT yet, oldest first, with when they opened."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._opened: dict[C, float] = {}

    def __len__(self) -> int:
        return len(self._opened)

    def opened(self, conn: C, now: float) -> None:
        """A socket arrived at ``now``."""
        self._opened[conn] = now

    def done(self, conn: C) -> None:
        """The socket completed CONNECT, or closed."""
        self._opened.pop(conn, None)

    def expired(self, now: float) -> list[C]:
        """Remove and return the sockets open longer than ``timeout`` without CONNECT.

        Insertion order is opening order, so this reads only the expired ones and one more.
        """
        out: list[C] = []
        for conn, since in self._opened.items():
            if now - since < self.timeout:
                break
            out.append(conn)
        for conn in out:
            del self._opened[conn]
        return out


class ConnectionLimits(Generic[C]):
    """Admission of new sockets (count, rate per source) and the CONNECT timeout."""

    def __init__(self, config: LimitsConfig) -> None:
        self.max_connections = config.max_connections
        self.rate = (
            SourceRateLimiter(config.connect_rate_per_source, config.connect_burst_per_source)
            if config.connect_rate_per_source > 0
            else None
        )
        self.deadlines: ConnectDeadlines[C] = ConnectDeadlines(config.connect_timeout_seconds)
        self.refusals = {
            name: LIMIT_REFUSALS_TOTAL.labels(name)
            for name in (MAX_CONNECTIONS, CONNECT_RATE, CONNECT_TIMEOUT, WRITE_BUFFER)
        }

    def admit(self, conn: C, host: str | None, open_count: int, now: float) -> str | None:
        """A socket arrived while ``open_count`` others are open: None if it may stay (its
        CONNECT clock starts), else the limit that refuses it (counted)."""
        refused = None
        if self.max_connections and open_count >= self.max_connections:
            refused = MAX_CONNECTIONS
        elif self.rate is not None and host is not None:
            if not self.rate.allow(source_key(host), now):
                refused = CONNECT_RATE
        if refused is not None:
            self.refusals[refused].inc()
            return refused
        self.deadlines.opened(conn, now)
        return None

    def connected(self, conn: C) -> None:
        """``conn`` completed CONNECT (or closed): its CONNECT clock stops."""
        self.deadlines.done(conn)

    def sweep(self, now: float) -> list[C]:
        """The sockets whose CONNECT timed out (counted; the caller closes them); also
        forgets the rate buckets that are full again."""
        if self.rate is not None:
            self.rate.prune(now)
        expired = self.deadlines.expired(now)
        if expired:
            self.refusals[CONNECT_TIMEOUT].inc(len(expired))
        return expired
