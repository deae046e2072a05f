"""What the node needs of an ingest producer, whichever Kafka client backs it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ingress.contract import Headers

DoneCallback = Callable[[BaseException | None], None]


class Ingest(Protocol):
    """Writes publishes to Kafka (acks=all) and calls ``done`` once each is acknowledged."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def pending(self) -> int: ...

    def submit(
        self, topic: str, key: bytes, value: bytes, headers: Headers, done: DoneCallback | None
    ) -> None: ...
