"""The agent runtime's Kafka clients, on confluent-kafka (librdkafka), used from asyncio.

Why not aiokafka (which the runtime used first): librdkafka parses fetched batches in C, where
aiokafka spent about a third of a counting worker's CPU unpacking records in Python; and its
transactions work on the embedded broker too (aiokafka's InitProducerId fails there, DESIGN §10),
so exactly-once needs it anyway: ``send_offsets_to_transaction`` takes the group metadata of a
librdkafka consumer.

The consumer lives on one thread of its own (librdkafka blocks while it waits for records; the
event loop must not). Its rebalance callbacks run inside ``consume()`` on that thread, between
two batches (the loop only polls after a batch is done), and only record what changed; the
loop applies the changes before it processes the records of the same poll.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from agents.runtime.engine import Record
from kafkaio.clients import client_conf
from kafkaio.security import PLAINTEXT, KafkaSecurity

log = logging.getLogger(__name__)

TP = tuple[str, int]
_CkHeaders = list[tuple[str, str | bytes | None]]
# librdkafka's "no offset / unknown" (RD_KAFKA_OFFSET_INVALID).
_INVALID = -1001


@dataclass(frozen=True, slots=True)
class Rebalance:
    """Partitions taken away (``revoked``: also lost) or given, in the order they happened."""

    kind: str  # "revoked" | "assigned"
    partitions: frozenset[TP]


class GroupConsumer:
    """A consumer-group member: batches of records, rebalance events, commits, positions."""

    def __init__(
        self,
        bootstrap: str,
        group: str,
        topics: list[str],
        *,
        session_timeout_ms: int,
        fetch_max_wait_ms: int,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        self.topics = topics
        self._conf: dict[str, Any] = {
            **client_conf(bootstrap, f"bayou-agents.{group}", security),
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": max(500, session_timeout_ms // 3),
            # Restoring a changelog runs between two polls.
            "max.poll.interval.ms": 300_000,
            "fetch.wait.max.ms": fetch_max_wait_ms,
            # Input written by transactional agents counts once it is committed (the default,
            # said here because exactly-once depends on it).
            "isolation.level": "read_committed",
        }
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="bayou-agents-consumer")
        self._consumer: Consumer | None = None
        self._events: list[Rebalance] = []
        self.assigned: set[TP] = set()
        # Per partition, the committed offset at assignment (see backlog()).
        self._start: dict[TP, int] = {}
        # Records behind the high watermark per assigned partition, as of the last backlog().
        self.lag: dict[TP, int] = {}

    async def start(self) -> None:
        """Create the consumer and subscribe (the group join happens in the first polls)."""
        self._consumer = Consumer(self._conf)
        self._consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )  # fmt: skip

    def _on_assign(self, _c: Any, parts: list[TopicPartition]) -> None:
        self._events.append(Rebalance("assigned", frozenset((p.topic, p.partition) for p in parts)))

    def _on_revoke(self, _c: Any, parts: list[TopicPartition]) -> None:
        self._events.append(Rebalance("revoked", frozenset((p.topic, p.partition) for p in parts)))

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def poll(
        self, max_records: int, timeout_s: float
    ) -> tuple[list[Record], list[Rebalance]]:
        """The next records (at most ``max_records``, waiting up to ``timeout_s``) and the
        rebalances that happened meanwhile; the records are of partitions assigned after them."""
        assert self._consumer is not None
        msgs = await self._run(self._take, max_records, timeout_s)
        events, self._events = self._events, []
        if events:
            self._start.clear()
        for ev in events:
            if ev.kind == "assigned":
                self.assigned |= ev.partitions
            else:
                self.assigned -= ev.partitions
        records: list[Record] = msgs
        for m in msgs:
            err = m.error()
            if err is not None:  # rare: then the batch is copied without the error events
                if err.fatal():
                    raise KafkaException(err)
                log.warning("consumer: %s", err)
                records = [r for r in msgs if r.error() is None]
                break
        if events:
            records = _current(records, self.assigned)
        return records, events

    def _take(self, max_records: int, timeout_s: float) -> list[Any]:
        # consume(n, timeout) returns only at n records or at the timeout, so a batch of fewer
        # than n records would wait the whole timeout, which commands to devices cannot afford.
        # So: wait for the first record only, then take what is already fetched, not waiting.
        c = self._consumer
        assert c is not None
        first = c.poll(timeout_s)
        if first is None:
            return []
        return [first, *c.consume(max_records - 1, 0)] if max_records > 1 else [first]

    async def backlog(self) -> set[TP]:
        """The assigned partitions not caught up: the position (past the records returned) has
        not reached the high watermark of the last Fetch, or neither is known yet. The cached
        high watermark is the Fetch one, not ListOffsets (which under-reports on Tansu). Before
        the first record of a partition since its assignment librdkafka knows no position: the
        committed offset stands in (read once per assignment), else an idle partition would
        count as behind until its next record."""
        assert self._consumer is not None
        c = self._consumer
        out: set[TP] = set()
        self.lag = {}
        tps = [TopicPartition(t, p) for t, p in sorted(self.assigned)]
        if not tps:
            return out
        positions = c.position(tps)
        unknown = [
            TopicPartition(tp.topic, tp.partition)
            for tp in positions
            if tp.offset < 0 and (tp.topic, tp.partition) not in self._start
        ]
        if unknown:
            for tp in await self._run(lambda: c.committed(unknown, timeout=10)):
                # Nothing committed: the consumer starts at the beginning.
                self._start[(tp.topic, tp.partition)] = max(tp.offset, 0)
        for tp in positions:
            key = (tp.topic, tp.partition)
            pos = tp.offset if tp.offset >= 0 else self._start.get(key, -1)
            _, high = c.get_watermark_offsets(tp, cached=True)
            if pos < 0 or high < 0 or pos < high:
                out.add(key)
            if pos >= 0 and high >= 0:
                self.lag[key] = max(high - pos, 0)
        return out

    async def commit(self, offsets: dict[TP, int]) -> bool:
        """Commit ``offsets`` (the next offset to read) and wait; False if the group moved on
        (a rebalance: the input will be read again, and skipped by the folded offsets)."""
        assert self._consumer is not None
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            await self._run(lambda: self._consumer.commit(offsets=tps, asynchronous=False))
        except KafkaException as exc:
            log.warning("offset commit failed (%s); the input will be read again", exc)
            return False
        return True

    async def rewind(self) -> None:
        """Seek every assigned partition back to its committed offset (after an aborted
        transaction: the loop re-reads what it had not committed)."""
        assert self._consumer is not None
        c = self._consumer
        tps = [TopicPartition(t, p) for t, p in sorted(self.assigned)]
        if not tps:
            return
        self._start.clear()
        committed = await self._run(lambda: c.committed(tps, timeout=30))
        for tp in committed:
            tp.offset = tp.offset if tp.offset >= 0 else 0
            await self._run(c.seek, tp)

    def group_metadata(self) -> Any:
        """For ``send_offsets_to_transaction``."""
        assert self._consumer is not None
        return self._consumer.consumer_group_metadata()

    async def close(self) -> None:
        """Leave the group (so the others rebalance at once) and stop the thread."""
        if self._consumer is not None:
            await self._run(self._consumer.close)
        self._pool.shutdown(wait=True)


def _current(records: list[Record], assigned: set[TP]) -> list[Record]:
    """After a rebalance inside one poll: only records of partitions still assigned, each
    partition's offsets ascending (a partition revoked and given back within the poll restarts
    from its committed offset: the records before the restart are dropped)."""
    out: list[Record] = []
    last: dict[TP, int] = {}
    for rec in records:
        tp, off = (rec.topic(), rec.partition()), rec.offset()
        if tp not in assigned:
            continue
        if off <= last.get(tp, -1):
            out = [r for r in out if (r.topic(), r.partition()) != tp or r.offset() < off]
        last[tp] = off
        out.append(rec)
    return out


class BatchProducer:
    """Produces a batch's records and waits for all of them; optionally in one transaction
    together with the input offsets (exactly-once)."""

    def __init__(
        self,
        bootstrap: str,
        transactional_id: str | None = None,
        transaction_timeout_ms: int = 30_000,
        *,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        conf: dict[str, Any] = {
            **client_conf(bootstrap, "bayou-agents", security),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 1,
            "queue.buffering.max.messages": 1_000_000,
            # One callback for every record (set here, not per produce() call).
            "on_delivery": self._on_delivery,
        }
        if transactional_id is not None:
            conf["transactional.id"] = transactional_id
            # An open transaction of a crashed worker holds back read_committed readers until
            # it times out (or the worker restarts with the same id and aborts it).
            conf["transaction.timeout.ms"] = transaction_timeout_ms
        self.transactional = transactional_id is not None
        self._in_txn = False
        self._producer = Producer(conf)
        self._delivered: list[Message] = []
        self._errors: list[str] = []

    async def start(self) -> None:
        """Check the cluster answers; fence an older instance's open transaction."""
        if self.transactional:
            await asyncio.to_thread(self._producer.init_transactions, 60)
        else:
            await asyncio.to_thread(self._producer.list_topics, timeout=15)

    def begin(self) -> None:
        """Start the batch's transaction (exactly-once only)."""
        if self.transactional:
            self._producer.begin_transaction()
            self._in_txn = True

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int = -1,
    ) -> None:
        """Queue one record (see :meth:`flush`); ``partition`` -1: the key's."""
        while True:
            try:
                self._producer.produce(
                    topic, value, key, partition, headers=cast(_CkHeaders | None, headers)
                )
                return
            except BufferError:  # a million records queued: let librdkafka send some
                self._producer.poll(0.05)

    def _on_delivery(self, err: Any, msg: Message) -> None:
        # Runs in flush() or poll(), once per record: kept to an append.
        if err is None:
            self._delivered.append(msg)
        else:
            self._errors.append(f"{msg.topic()}: {err}")

    async def flush(self) -> list[Message]:
        """Wait until Kafka acknowledged every queued record; the records as written. Raises
        RuntimeError if one failed (the batch is not done: nothing after it may be written)."""
        left = await asyncio.to_thread(self._producer.flush, 60)
        delivered, self._delivered = self._delivered, []
        errors, self._errors = self._errors, []
        if left or errors:
            raise DeliveryError(
                f"Kafka did not acknowledge {left + len(errors)} record(s): {errors[:3]}"
            )
        return delivered

    async def commit(self, offsets: dict[TP, int], group_metadata: Any) -> None:
        """Commit the transaction with the input offsets in it (exactly-once only).

        A retriable error (a timeout) leaves the call in progress in librdkafka, which expects
        the same call again, not an abort: it is repeated (3 tries) before it is raised."""
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        p = self._producer
        if tps:
            await _retrying(p.send_offsets_to_transaction, tps, group_metadata, 30)
        await _retrying(p.commit_transaction, 30)
        self._in_txn = False

    async def abort(self) -> None:
        """Abort the open transaction (its records never reach read_committed readers)."""
        await asyncio.to_thread(self._producer.abort_transaction, 30)
        self._in_txn = False
        # The abort purged what was still queued: serve those reports now, so that they do
        # not fail the next batch's flush.
        self._producer.poll(0)
        self._delivered, self._errors = [], []

    async def close(self) -> None:
        """Abort a transaction left open (the worker stops on an error mid-batch: readers
        must not wait for it to time out), then send what is queued (up to 10 s)."""
        if self._in_txn:
            try:
                await asyncio.to_thread(self._producer.abort_transaction, 10)
            except KafkaException as exc:
                log.warning("could not abort the open transaction: %s", exc)
            self._in_txn = False
        await asyncio.to_thread(self._producer.flush, 10)


async def _retrying(fn: Any, *args: Any) -> None:
    for attempt in range(3):
        try:
            await asyncio.to_thread(fn, *args)
            return
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            again = isinstance(err, KafkaError) and err.retriable() and not err.txn_requires_abort()
            if not again or attempt == 2:
                raise
            log.warning("transaction call failed, retrying: %s", exc)


class DeliveryError(RuntimeError):
    """Records of a batch that Kafka did not acknowledge."""


def is_retriable_txn(exc: BaseException) -> bool:
    """A transaction error after which abort + re-read works (not fenced, not fatal). A bug
    in an agent or Bayou is not: re-reading would only raise it again."""
    if not isinstance(exc, KafkaException) or not exc.args:
        return isinstance(exc, DeliveryError)
    err = exc.args[0]
    if not isinstance(err, KafkaError):
        return False
    return bool(err.txn_requires_abort())
