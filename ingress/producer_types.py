"""What the node needs of an ingest producer, whichever Kafka client backs it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from ingress.contract import Headers
from ingress.metrics import PRODUCE_FAILURES_TOTAL, PRODUCE_LATENCY

DoneCallback = Callable[[BaseException | None], None]


class Ingest(Protocol):
    """Writes publishes to Kafka (acks=all) and calls ``done`` once each is acknowledged."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def pending(self) -> int: ...

    def submit(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        headers: Headers,
        done: DoneCallback | None,
    ) -> None: ...


class AckAccounting:
    """The bookkeeping both producers share: unacknowledged count, metrics, the callback."""

    def __init__(self) -> None:
        self.unacked = 0

    @property
    def pending(self) -> int:
        """Records submitted and not yet acknowledged (or failed) by Kafka."""
        return self.unacked

    def _finish(self, done: DoneCallback | None, t0: float, exc: BaseException | None) -> None:
        self.unacked -= 1
        if exc is None:
            PRODUCE_LATENCY.observe(time.perf_counter() - t0)
        else:
            PRODUCE_FAILURES_TOTAL.inc()
        if done is not None:
            done(exc)
