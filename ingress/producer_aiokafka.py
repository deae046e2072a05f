"""The ingest producer on aiokafka (the alternative to confluent-kafka, for measuring both)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from aiokafka import AIOKafkaProducer

from ingress.contract import Headers
from ingress.producer_types import AckAccounting, DoneCallback

log = logging.getLogger(__name__)


class AiokafkaIngest(AckAccounting):
    """Writes MQTT publishes to Kafka with ``acks=all`` and reports each acknowledgement.

    The alternative to :class:`ingress.kafka.producer.ConfluentIngest`, kept so both can
    be measured (``BAYOU_INGRESS_PRODUCER=aiokafka``); aiokafka's idempotent producer does not
    work on the embedded broker, so this one is not idempotent.

    ``submit`` is synchronous so the protocol's ``data_received`` never awaits; one pump task
    feeds aiokafka's accumulator in arrival order (so per-client order is kept), and the
    producer batches by linger time, which is where the throughput comes from.
    """

    def __init__(
        self, bootstrap: str, linger_ms: int = 2, request_timeout_ms: int = 30_000
    ) -> None:
        super().__init__()
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=linger_ms,
            max_batch_size=256 * 1024,
            request_timeout_ms=request_timeout_ms,
            client_id="bayou-ingress",
        )
        self._queue: deque[tuple[str, bytes, bytes | None, Headers, DoneCallback | None, float]] = (
            deque()
        )
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect the producer and start the pump."""
        await self.producer.start()
        self._task = asyncio.create_task(self._pump(), name="bayou-ingest-pump")

    @property
    def pending(self) -> int:
        """Records submitted and not yet acknowledged: still queued, or handed to aiokafka."""
        return len(self._queue) + self.unacked

    async def stop(self) -> None:
        """Flush what was handed to the producer, then stop."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.producer.stop()

    def submit(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        headers: Headers,
        done: DoneCallback | None,
    ) -> None:
        """Queue one record; ``done(None)`` once Kafka acknowledged it, ``done(exc)`` if not."""
        self._queue.append((topic, key, value, headers, done, time.perf_counter()))
        if len(self._queue) == 1:
            self._wake.set()

    async def _pump(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            topic, key, value, headers, done, t0 = queue.popleft()
            self.unacked += 1
            try:
                fut = await self.producer.send(topic, value, key=key, headers=headers)
            except Exception as exc:  # e.g. KafkaTimeoutError waiting for metadata
                self._finish(done, t0, exc)
                continue
            fut.add_done_callback(lambda f, d=done, s=t0: self._on_ack(f, d, s))

    def _on_ack(self, fut: asyncio.Future[Any], done: DoneCallback | None, t0: float) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if fut.cancelled():
            exc = asyncio.CancelledError()
        self._finish(done, t0, exc)
