"""Reading the delivery topics: every record for MQTT subscribers on this node.

Every node reads every partition of the delivery topics (no consumer group: each node must
see each record, DESIGN §1), from the end at start. confluent-kafka parses fetches in C;
aiokafka's pure-Python record parsing cost about a tenth of a core at ingest rates even
with no subscriber. A reader thread hands batches to the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from confluent_kafka import OFFSET_END, Consumer, KafkaError, TopicPartition

from ingress.contract import Headers

log = logging.getLogger(__name__)

# One delivered record: (headers, value).
Record = tuple[Headers, bytes]
Deliver = Callable[[list[Record]], None]


class KafkaDelivery:
    """Assigns all partitions of ``topics`` at their end and passes new records to ``deliver``.

    Note: on the embedded Tansu broker the end offset can come back a few records early
    (ListOffsets LATEST under-reports, DESIGN §10): a node started while subscribers already
    wait could deliver a few records from just before its start.
    """

    def __init__(self, bootstrap: str, topics: list[str], deliver: Deliver, node_id: str) -> None:
        self.topics = topics
        self.deliver = deliver
        self._conf = {
            "bootstrap.servers": bootstrap,
            # Required by librdkafka, unused: partitions are assigned, never committed.
            "group.id": f"bayou-delivery-{node_id}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # Small: the embedded broker holds a fetch for the whole wait even when data
            # arrives (measured: 100 ms raised pub→sub p50 from 8 to 19 ms at 1,000 msg/s).
            "fetch.wait.max.ms": 5,
            "client.id": f"bayou-delivery-{node_id}",
        }
        self._consumer: Consumer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        """Assign every partition of the topics at their end; start reading."""
        self._loop = asyncio.get_running_loop()
        consumer = Consumer(self._conf)
        self._consumer = consumer
        meta = await asyncio.to_thread(consumer.list_topics, timeout=15)
        tps: list[TopicPartition] = []
        for t in self.topics:
            tmeta = meta.topics.get(t)
            if tmeta is None or tmeta.error is not None or not tmeta.partitions:
                raise RuntimeError(f"Kafka topic {t!r} does not exist; create it first")
            tps += [TopicPartition(t, p, OFFSET_END) for p in sorted(tmeta.partitions)]
        consumer.assign(tps)
        self._running = True
        self._thread = threading.Thread(target=self._read, name="bayou-delivery", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop reading and close the consumer."""
        self._running = False
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
        if self._consumer is not None:
            await asyncio.to_thread(self._consumer.close)

    def _read(self) -> None:
        consumer, loop = self._consumer, self._loop
        assert consumer is not None and loop is not None
        while self._running:
            # poll() returns as soon as one record is there; consume(…, 0) then drains what is
            # already fetched without waiting, so a lone command is not held for a batch.
            first = consumer.poll(0.1)
            if first is None:
                continue
            msgs = [first, *consumer.consume(5000, 0)]
            batch: list[Record] = []
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("delivery consumer: %s", err)
                    continue
                batch.append((m.headers() or [], m.value() or b""))  # type: ignore[arg-type]
            if batch:
                try:
                    loop.call_soon_threadsafe(self._deliver, batch)
                except RuntimeError:  # loop closed during shutdown
                    return

    def _deliver(self, batch: list[Record]) -> None:
        try:
            self.deliver(batch)
        except Exception:
            log.exception("delivery of a batch failed")
