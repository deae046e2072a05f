"""Where a PUBLISH becomes a Kafka record: the node's one producer, on confluent-kafka.

The inbound path (:mod:`ingress.inbound`) submits each routed publish here; the connection sends
its PUBACK only when ``done`` reports Kafka's acknowledgement (``acks=all``). librdkafka builds
batches in C: one ``produce()`` call costs a few microseconds, against tens for aiokafka's
Python batching, and its idempotent producer works on the embedded broker where aiokafka's does
not (DESIGN §8, §10). Delivery reports arrive on a poll thread and are handed to the event loop
in batches, one ``call_soon_threadsafe`` per poll. Session and retained records are written
through it too.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from confluent_kafka import KafkaException, Producer

from ingress.contract import Headers
from ingress.metrics import PRODUCE_FAILURES_TOTAL, PRODUCE_LATENCY
from kafkaio.clients import client_conf
from kafkaio.security import PLAINTEXT, KafkaSecurity

_CkHeaders = list[tuple[str, str | bytes | None]]

# Called once Kafka acknowledged a record (None) or gave up on it (the error).
DoneCallback = Callable[[BaseException | None], None]


class IngestProducer:
    """Writes records with ``acks=all`` and idempotence; reports each acknowledgement."""

    def __init__(
        self,
        bootstrap: str,
        linger_ms: int = 2,
        message_timeout_ms: int = 30_000,
        *,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        # Records submitted and not yet acknowledged (or failed) by Kafka: backpressure.
        self.pending = 0
        self._conf: dict[str, Any] = {
            **client_conf(bootstrap, "bayou-ingress", security),
            "acks": "all",
            # Retries can neither duplicate nor reorder a client's messages.
            "enable.idempotence": True,
            "linger.ms": linger_ms,
            "batch.size": 256 * 1024,
            "queue.buffering.max.messages": 1_000_000,
            # After this a record counts as failed: the client is closed without PUBACK and
            # resends on reconnect.
            "message.timeout.ms": message_timeout_ms,
        }
        self._producer: Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reports: list[tuple[DoneCallback | None, float, BaseException | None]] = []
        self._lock = threading.Lock()
        self._running = False
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        """Create the producer, check the cluster answers, start the poll thread."""
        self._loop = asyncio.get_running_loop()
        self._producer = Producer(self._conf)
        # Fail at start, not on the first publish, when Kafka is unreachable.
        await asyncio.to_thread(self._producer.list_topics, timeout=15)
        self._running = True
        self._thread = threading.Thread(target=self._poll, name="bayou-ingest-poll", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Flush outstanding records (up to 10 s), then stop polling."""
        if self._producer is not None:
            await asyncio.to_thread(self._producer.flush, 10)
        self._running = False
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)

    def submit(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        headers: Headers,
        done: DoneCallback | None,
    ) -> None:
        """Queue one record; ``done(None)`` once Kafka acknowledged it, ``done(exc)`` if not."""
        assert self._producer is not None
        t0 = time.perf_counter()
        self.pending += 1
        try:
            self._producer.produce(
                topic, value, key, headers=cast(_CkHeaders, headers),
                on_delivery=lambda err, _msg: self._report(done, t0, err),
            )  # fmt: skip
        except (BufferError, KafkaException) as exc:
            self._finish(done, t0, exc)

    def _report(self, done: DoneCallback | None, t0: float, err: Any) -> None:
        # Runs on the poll thread: only collect; the event loop does the work.
        exc = None if err is None else KafkaException(err)
        with self._lock:
            self._reports.append((done, t0, exc))

    def _poll(self) -> None:
        assert self._producer is not None and self._loop is not None
        while self._running:
            self._producer.poll(0.05)
            with self._lock:
                batch, self._reports = self._reports, []
            if batch:
                try:
                    self._loop.call_soon_threadsafe(self._dispatch, batch)
                except RuntimeError:  # loop closed during shutdown
                    return

    def _dispatch(
        self, batch: list[tuple[DoneCallback | None, float, BaseException | None]]
    ) -> None:
        for done, t0, exc in batch:
            self._finish(done, t0, exc)

    def _finish(self, done: DoneCallback | None, t0: float, exc: BaseException | None) -> None:
        self.pending -= 1
        if exc is None:
            PRODUCE_LATENCY.observe(time.perf_counter() - t0)
        else:
            PRODUCE_FAILURES_TOTAL.inc()
        if done is not None:
            done(exc)
