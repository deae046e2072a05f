"""The assigned-partition Kafka reader: every reader of Bayou's that is not a group member.

Ingress nodes read every partition of the outbound and state topics (each node must see every
record, DESIGN §1) and re-read ranges for resumed sessions; agent workers restore tables from
changelogs, follow other apps' changelogs and replay input. All of them assign partitions
themselves, and all of them need to know when a partition has been read to its end. That end is
the one Fetch reports (librdkafka's end-of-partition event carries the fetch's high watermark,
or the last stable offset for a ``read_committed`` reader), never ListOffsets, which
under-reports on the embedded broker (DESIGN §10). The reader is blocking: run it on a thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

from kafkaio.clients import reader_conf
from kafkaio.security import PLAINTEXT, KafkaSecurity

log = logging.getLogger(__name__)

TP = tuple[str, int]
BEGINNING: int = OFFSET_BEGINNING
END: int = OFFSET_END

# Errors a reader cannot outwait; librdkafka retries the others (a broker restarting, say).
# How long a topic may be unknown before it counts as missing (metadata reaches the brokers
# a moment after CreateTopics answers).
_NEW_TOPIC_GRACE_S = 5.0
_LASTING = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.TOPIC_AUTHORIZATION_FAILED)


class ReadError(RuntimeError):
    """A Kafka read that cannot succeed by waiting (missing topic, no authorisation, fatal)."""


class Record(NamedTuple):
    """One Kafka record as Bayou reads it (``value`` None: a tombstone)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: list[tuple[str, bytes]]
    value: bytes | None
    timestamp_ms: int = -1


class Polled(NamedTuple):
    """What one :meth:`PartitionReader.poll` brought: records, and partitions found at their
    end with that end offset (the next offset to be written there)."""

    records: list[Record]
    ends: dict[TP, int]


def lasting(err: Any) -> bool:
    """A read error (other than end of partition) to raise rather than log and wait out."""
    return bool(err.fatal()) or err.code() in _LASTING


class PartitionReader:
    """A consumer on partitions it assigns itself, optionally bounded per partition.

    :meth:`assign` takes the start offset of each partition and, for a bounded read, the offset
    to stop before (``ends``) or ``to_first_end=True``: stop at the end the first fetch of each
    partition reports. A bounded partition is paused once read, and :attr:`remaining` says what
    is left; :meth:`read_to_end` reads until nothing is.
    """

    def __init__(
        self,
        bootstrap: str,
        name: str,
        *,
        security: KafkaSecurity = PLAINTEXT,
        read_committed: bool = False,
        fetch_wait_ms: int | None = None,
    ) -> None:
        self.name = name
        conf = reader_conf(
            bootstrap, name, security, read_committed=read_committed, fetch_wait_ms=fetch_wait_ms
        )
        self.consumer = Consumer(conf)
        self.remaining: set[TP] = set()
        self._ends: dict[TP, int] = {}
        self._to_first_end = False
        self._bounded = False

    def partitions(self, topics: Iterable[str], timeout: float = 15.0) -> list[TP]:
        """Every partition of ``topics``; :class:`ReadError` for a topic that does not exist
        (after a few seconds: a topic just created may not be known to every broker yet)."""
        out: list[TP] = []
        for topic in topics:
            deadline = time.monotonic() + _NEW_TOPIC_GRACE_S
            while True:
                meta = self.consumer.list_topics(topic, timeout=timeout).topics.get(topic)
                if meta is not None and meta.error is None and meta.partitions:
                    break
                if time.monotonic() > deadline:
                    raise ReadError(f"Kafka topic {topic!r} does not exist; create it first")
                time.sleep(0.2)
            out += [(topic, p) for p in sorted(meta.partitions)]
        return out

    def offsets_for_time(self, tps: Iterable[TP], ms: int, timeout: float = 10.0) -> dict[TP, int]:
        """Per partition, the first offset whose timestamp is at or after ``ms``; partitions
        with no such record are left out."""
        asked = [TopicPartition(t, p, ms) for t, p in tps]
        if not asked:
            return {}
        out: dict[TP, int] = {}
        for tp in self.consumer.offsets_for_times(asked, timeout=timeout):
            if tp.error is not None:
                raise ReadError(f"offsets_for_times {tp.topic}[{tp.partition}]: {tp.error}")
            if tp.offset >= 0:
                out[(tp.topic, tp.partition)] = tp.offset
        return out

    def assign(
        self,
        starts: Mapping[TP, int],
        ends: Mapping[TP, int] | None = None,
        *,
        to_first_end: bool = False,
    ) -> None:
        """Read each partition of ``starts`` from its offset (or :data:`BEGINNING`/:data:`END`)."""
        self._to_first_end = to_first_end
        self._bounded = ends is not None or to_first_end
        self._ends = {}
        self.remaining = set()
        if self._bounded:
            for tp, start in starts.items():
                end = None if ends is None else ends.get(tp)
                if end is not None:
                    if start >= 0 and start >= end:
                        continue  # an empty range: nothing to read
                    self._ends[tp] = end
                self.remaining.add(tp)
        self.consumer.assign([TopicPartition(t, p, off) for (t, p), off in starts.items()])

    def poll(self, timeout: float, max_records: int = 5000) -> Polled:
        """Wait up to ``timeout`` s for a record, then take what is already fetched.

        ``poll`` returns as soon as one record is there and ``consume(…, 0)`` then drains the
        fetched rest without waiting, so a lone record is not held back for a batch.
        """
        first = self.consumer.poll(timeout)
        if first is None:
            return Polled([], {})
        msgs = [first, *self.consumer.consume(max_records, 0)]
        records: list[Record] = []
        ends: dict[TP, int] = {}
        bounded = self._bounded
        for m in msgs:
            if not bounded and m.error() is None:
                # A follower's record (an ingress node reads every record back this way): no
                # bookkeeping, nothing built but the record.
                records.append(
                    Record(m.topic(), m.partition(), m.offset(), m.key(),  # type: ignore[arg-type]
                           m.headers() or [], m.value(), m.timestamp()[1])  # type: ignore[arg-type]
                )  # fmt: skip
                continue
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            assert topic is not None and partition is not None and offset is not None
            tp = (topic, partition)
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    ends[tp] = offset
                    if bounded and offset >= self._ends.setdefault(tp, offset):
                        self._finish(tp)
                elif lasting(err):
                    raise ReadError(f"reader {self.name}: {err}")
                else:
                    log.warning("reader %s: %s", self.name, err)  # transient: librdkafka retries
                continue
            if bounded:
                end = self._ends.get(tp)
                if end is None and self._to_first_end and tp in self.remaining:
                    # The high watermark of the fetch that brought this record.
                    _, high = self.consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), cached=True
                    )
                    if high >= 0:
                        end = self._ends[tp] = high
                if tp not in self.remaining or (end is not None and offset >= end):
                    self._finish(tp)
                    continue
            headers: list[tuple[str, bytes]] = m.headers() or []  # type: ignore[assignment]
            records.append(
                Record(topic, partition, offset, m.key(), headers, m.value(), m.timestamp()[1])
            )
            if bounded and end is not None and offset + 1 >= end:
                self._finish(tp)
        return Polled(records, ends)

    def read_to_end(self, timeout: float = 0.2) -> Iterator[list[Record]]:
        """Batches of a bounded read until every partition is read (see :meth:`assign`)."""
        while self.remaining:
            polled = self.poll(timeout)
            if polled.records:
                yield polled.records

    def high_watermark(self, tp: TP, timeout: float = 10.0) -> int:
        """The partition's high watermark asked of the broker (not the cached fetch one)."""
        _, high = self.consumer.get_watermark_offsets(TopicPartition(*tp), timeout=timeout)
        return int(high)

    def close(self) -> None:
        """Leave the partitions and close the consumer."""
        self.consumer.close()

    def _finish(self, tp: TP) -> None:
        if tp in self.remaining:
            self.remaining.discard(tp)
            self.consumer.pause([TopicPartition(*tp)])
