"""Reading Kafka topics on a node: records to deliver, and compacted state to materialise.

Every node reads every partition of the topics it needs (no consumer group: each node must
see each record, DESIGN §1). confluent-kafka parses fetches in C; aiokafka's pure-Python
record parsing cost about a tenth of a core at ingest rates even with no subscriber. A
reader thread hands batches to the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import NamedTuple

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

from ingress.contract import Headers

log = logging.getLogger(__name__)


class Record(NamedTuple):
    """One Kafka record as the node uses it (value None = tombstone)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: Headers
    value: bytes | None


OnRecords = Callable[[list[Record]], None]


class TopicReader:
    """Assigns all partitions of ``topics`` and passes their records to ``on_records``.

    ``from_beginning`` reads each partition from its start, otherwise from its end. Either way
    :meth:`start` returns only once every partition was read up to the high watermark its
    first fetch reported: that is how compacted topics (retained messages, sessions) are
    materialised before a node serves, and how ``positions`` covers every partition.
    The high watermark comes from Fetch responses, not ListOffsets, which under-reports on the
    embedded broker (DESIGN §10).

    Otherwise it starts at the end. Note: on the embedded broker that end can come back a few
    records early (the same ListOffsets fault), so a node started while subscribers already
    wait could deliver a few records from just before its start.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: list[str],
        on_records: OnRecords,
        name: str,
        *,
        from_beginning: bool = False,
        fetch_wait_ms: int = 5,
    ) -> None:
        self.topics = topics
        self.on_records = on_records
        self.from_beginning = from_beginning
        # Next offset to hand over, per (topic, partition): what this node has processed.
        self.positions: dict[tuple[str, int], int] = {}
        self._conf = {
            "bootstrap.servers": bootstrap,
            # Required by librdkafka, unused: partitions are assigned, never committed.
            "group.id": f"bayou-{name}",
            "client.id": f"bayou-{name}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            # Small: the embedded broker holds a fetch for the whole wait even when data
            # arrives (measured: 100 ms raised pub→sub p50 from 8 to 19 ms at 1,000 msg/s).
            "fetch.wait.max.ms": fetch_wait_ms,
        }
        self._consumer: Consumer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._thread: threading.Thread | None = None
        self._at_end: set[tuple[str, int]] = set()
        self._partitions: set[tuple[str, int]] = set()
        self._caught_up = asyncio.Event()

    async def start(self, catch_up_timeout: float = 30.0) -> None:
        """Assign the partitions and start reading (and catch up, if from the beginning)."""
        self._loop = asyncio.get_running_loop()
        consumer = Consumer(self._conf)
        self._consumer = consumer
        meta = await asyncio.to_thread(consumer.list_topics, timeout=15)
        start = OFFSET_BEGINNING if self.from_beginning else OFFSET_END
        tps: list[TopicPartition] = []
        for t in self.topics:
            tmeta = meta.topics.get(t)
            if tmeta is None or tmeta.error is not None or not tmeta.partitions:
                raise RuntimeError(f"Kafka topic {t!r} does not exist; create it first")
            tps += [TopicPartition(t, p, start) for p in sorted(tmeta.partitions)]
        self._partitions = {(tp.topic, tp.partition) for tp in tps}
        consumer.assign(tps)
        self._running = True
        self._thread = threading.Thread(target=self._read, name="bayou-read", daemon=True)
        self._thread.start()
        # Wait until every partition has been read to its end once: then ``positions`` holds
        # every partition (sessions start from them).
        await asyncio.wait_for(self._caught_up.wait(), catch_up_timeout)

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
            eofs: list[tuple[str, int, int]] = []
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eofs.append((m.topic(), m.partition(), m.offset()))  # type: ignore[arg-type]
                    else:
                        log.warning("reader %s: %s", self._conf["client.id"], err)
                    continue
                batch.append(
                    Record(m.topic(), m.partition(), m.offset(), m.key(),  # type: ignore[arg-type]
                           m.headers() or [], m.value())  # type: ignore[arg-type]
                )  # fmt: skip
            if batch or eofs:
                try:
                    loop.call_soon_threadsafe(self._hand_over, batch, eofs)
                except RuntimeError:  # loop closed during shutdown
                    return

    def _hand_over(self, batch: list[Record], eofs: list[tuple[str, int, int]]) -> None:
        positions = self.positions
        for rec in batch:
            positions[(rec.topic, rec.partition)] = rec.offset + 1
        for topic, partition, offset in eofs:
            # At the end of a partition: its position is the high watermark of the fetch,
            # also for a partition that has had no record since the node started.
            key = (topic, partition)
            if offset > positions.get(key, -1):
                positions[key] = offset
        if batch:
            try:
                self.on_records(batch)
            except Exception:
                log.exception("handling a batch of records failed")
        if eofs and not self._caught_up.is_set():
            self._at_end.update((t, p) for t, p, _ in eofs)
            if self._at_end >= self._partitions:
                self._caught_up.set()
