"""The shared assigned-partition reader (kafkaio/reader.py) on the embedded broker: ends come
from Fetch, bounded reads stop where they were told, missing topics are a clear error."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bayou.embedded import EmbeddedKafka
from kafkaio.reader import BEGINNING, PartitionReader, ReadError

pytestmark = pytest.mark.integration


def topic_with(kafka: EmbeddedKafka, per_partition: list[int]) -> str:
    """A new topic with ``per_partition[p]`` records in partition p (several per batch)."""
    name = f"reader-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.create_topics([NewTopic(name, len(per_partition), 1)])[name].result(15)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 50})
    for p, n in enumerate(per_partition):
        for i in range(n):
            producer.produce(name, f"v{i}".encode(), f"k{i}".encode(), partition=p,
                             headers=[("h", b"1")])  # fmt: skip
    assert producer.flush(15) == 0
    return name


def test_to_first_end_reads_every_record_once_and_stops(kafka: EmbeddedKafka) -> None:
    topic = topic_with(kafka, [7, 0, 3])
    reader = PartitionReader(kafka.bootstrap, "test-reader")
    try:
        tps = reader.partitions([topic])
        reader.assign(dict.fromkeys(tps, BEGINNING), to_first_end=True)
        got = [r for batch in reader.read_to_end() for r in batch]
    finally:
        reader.close()
    assert sorted((r.partition, r.offset) for r in got) == [
        *[(0, i) for i in range(7)], *[(2, i) for i in range(3)]
    ]  # fmt: skip
    first = min(got, key=lambda r: (r.partition, r.offset))
    assert (first.key, first.value, first.headers) == (b"k0", b"v0", [("h", b"1")])
    assert first.timestamp_ms > 0


def test_explicit_ranges_stop_before_their_end(kafka: EmbeddedKafka) -> None:
    topic = topic_with(kafka, [10, 4])
    reader = PartitionReader(kafka.bootstrap, "test-ranges")
    try:
        reader.assign({(topic, 0): 3, (topic, 1): 2}, {(topic, 0): 6, (topic, 1): 2})
        assert reader.remaining == {(topic, 0)}  # [2, 2) is empty
        got = [r.offset for batch in reader.read_to_end() for r in batch]
    finally:
        reader.close()
    assert got == [3, 4, 5]


def test_unbounded_read_reports_each_partition_end(kafka: EmbeddedKafka) -> None:
    topic = topic_with(kafka, [5, 2])
    reader = PartitionReader(kafka.bootstrap, "test-ends", fetch_wait_ms=5)
    ends: dict[tuple[str, int], int] = {}
    try:
        reader.assign(dict.fromkeys(reader.partitions([topic]), BEGINNING))
        for _ in range(100):
            ends.update(reader.poll(0.2).ends)
            if len(ends) == 2:
                break
    finally:
        reader.close()
    assert ends == {(topic, 0): 5, (topic, 1): 2}


def test_a_missing_topic_is_a_clear_error(kafka: EmbeddedKafka) -> None:
    reader = PartitionReader(kafka.bootstrap, "test-missing")
    try:
        with pytest.raises(ReadError, match="does not exist"):
            reader.partitions(["no-such-topic-here"])
    finally:
        reader.close()
