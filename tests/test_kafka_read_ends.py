"""Where Bayou's readers think a partition ends, on a real Apache Kafka (issue 11 (d)).

Bayou never asks ListOffsets where a partition ends: the embedded broker under-reports it
(DESIGN §10), so every reader takes the end the last Fetch reported (librdkafka's cached high
watermark, or its end-of-partition event). On Kafka a transactional producer (an exactly-once
worker) leaves commit and abort markers in the log: offsets no reader ever receives. A reader
that compared "the offset after the last record I got" with the high watermark would stay one
behind forever after every transaction, and one that took the high watermark as "committed up
to here" would wait for records an open transaction may never commit. These tests write such
logs — committed, aborted and still open transactions, the marker last — and check each reader:

- the agent worker's group consumer (:class:`agents.runtime.kafka_clients.GroupConsumer`):
  once it has every committed record, ``backlog()`` is empty and the lag (what
  ``bayou_agent_consumer_lag`` shows) is 0; while a transaction is open, it is behind;
- the assigned-partition reader (:class:`kafkaio.reader.PartitionReader`, read_committed, as
  the ingress delivery, session catch-up and changelog restore use it) reads the committed
  records only and finishes a bounded read at the log's end (also after an abort).

On the ``apache_kafka`` fixture (one KRaft broker); fresh topics per test.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from confluent_kafka import Producer

from agents.runtime.kafka_clients import GroupConsumer
from kafkaio.admin import ensure_topics
from kafkaio.reader import BEGINNING, PartitionReader
from tests.apache_kafka import ApacheKafka

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _txn_producer(bootstrap: str) -> Producer:
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"t-{uuid.uuid4().hex}"})
    p.init_transactions(30)
    return p


def _transaction(p: Producer, topic: str, values: list[bytes], *, commit: bool) -> None:
    p.begin_transaction()
    for v in values:
        p.produce(topic, v, partition=0)
    p.flush(30)
    if commit:
        p.commit_transaction(30)
    else:
        p.abort_transaction(30)


async def _marked_log(bootstrap: str, topic: str) -> list[bytes]:
    """A one-partition topic: committed, aborted, committed (a commit marker last); the
    committed values."""
    await ensure_topics(bootstrap, [topic], 1, 1)
    p = _txn_producer(bootstrap)
    _transaction(p, topic, [b"a", b"b", b"c"], commit=True)
    _transaction(p, topic, [b"x", b"y"], commit=False)
    _transaction(p, topic, [b"d", b"e"], commit=True)
    return [b"a", b"b", b"c", b"d", b"e"]


@pytest.fixture
def bootstrap(apache_kafka: ApacheKafka) -> str:
    return apache_kafka.bootstrap()


async def test_group_consumer_is_caught_up_past_a_commit_marker(bootstrap: str) -> None:
    topic = f"ends.group.{uuid.uuid4().hex[:8]}"
    committed = await _marked_log(bootstrap, topic)
    c = GroupConsumer(
        bootstrap, f"g-{uuid.uuid4().hex[:8]}", [topic], session_timeout_ms=6000,
        fetch_max_wait_ms=50,
    )  # fmt: skip
    await c.start()
    try:
        got: list[bytes | None] = []
        behind: set[tuple[str, int]] = {(topic, 0)}
        deadline = asyncio.get_running_loop().time() + 30
        # Caught up = every committed record taken, and the partition not behind any more
        # (librdkafka moves the position past the markers, which are never returned).
        while len(got) < len(committed) or behind:
            assert asyncio.get_running_loop().time() < deadline, (got, behind, c.lag)
            records, _ = await c.poll(100, 0.2)
            got += [r.value() for r in records]
            behind = await c.backlog()
        assert got == committed  # the aborted x, y never arrive
        assert c.lag == {(topic, 0): 0}
        # A transaction left open: its records are not readable, and the partition is behind
        # (the high watermark is past them) until it commits.
        p = _txn_producer(bootstrap)
        p.begin_transaction()
        p.produce(topic, b"f", partition=0)
        p.flush(30)
        for _ in range(10):
            records, _ = await c.poll(100, 0.2)
            assert records == []
        assert await c.backlog() == {(topic, 0)}
        p.commit_transaction(30)
        more: list[bytes | None] = []
        while len(more) < 1 or behind:
            assert asyncio.get_running_loop().time() < deadline + 30, (more, behind, c.lag)
            records, _ = await c.poll(100, 0.2)
            more += [r.value() for r in records]
            behind = await c.backlog()
        assert more == [b"f"] and c.lag == {(topic, 0): 0}
    finally:
        await c.close()


def test_partition_reader_reads_committed_records_to_the_end(bootstrap: str) -> None:
    topic = f"ends.reader.{uuid.uuid4().hex[:8]}"
    committed = asyncio.run(_marked_log(bootstrap, topic))
    # Ending in an abort marker too: a second topic.
    aborted_last = f"{topic}.aborted"
    asyncio.run(ensure_topics(bootstrap, [aborted_last], 1, 1))
    p = _txn_producer(bootstrap)
    _transaction(p, aborted_last, [b"a"], commit=True)
    _transaction(p, aborted_last, [b"x"], commit=False)
    for name, want in ((topic, committed), (aborted_last, [b"a"])):
        reader = PartitionReader(bootstrap, f"ends-{uuid.uuid4().hex[:8]}", read_committed=True)
        try:
            reader.assign({(name, 0): BEGINNING}, to_first_end=True)
            got: list[bytes | None] = []

            def read_all(r: PartitionReader = reader, out: list[bytes | None] = got) -> bool:
                for batch in r.read_to_end(timeout=0.2):
                    out += [rec.value for rec in batch]
                return True

            # read_to_end returns only once the bounded read is finished; the test's timeout
            # catches a reader that waits for records that never come.
            assert read_all()
            assert got == want, name
            assert reader.remaining == set()
        finally:
            reader.close()
