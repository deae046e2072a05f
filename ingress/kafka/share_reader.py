"""The Kafka side of a shared subscription: a consumer-group member over the delivery topics.

Each node with members of a shared subscription ``$share/{group}/{filter}`` runs one of these
in the Kafka consumer group ``bayou-share.{group}.{hash of filter}``. Kafka's group protocol
gives each partition of the delivery topics to one node: that node alone sends the partition's
matching records to its members (:mod:`ingress.outbound.shared`). A node that goes away
(its last member left, it stopped, it died) leaves the group; the partitions move to the other
nodes, which go on from the committed offsets. The group commits, per partition, the lowest
offset still in flight to a member, so what a lost member had not acknowledged is sent again.

The consumer is librdkafka's, on a thread (like :mod:`ingress.kafka.topic_reader`); the loop
side is a :class:`ShareHandler`. Rebalance callbacks run on the thread inside ``poll``; a
revocation waits for the loop to say what is done, so the commit never passes a record the
loop has not handled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from kafkaio.clients import client_conf
from kafkaio.reader import TP, Record
from kafkaio.security import KafkaSecurity

log = logging.getLogger(__name__)

T = TypeVar("T")
# How often the thread commits what the loop says is done (and on every revocation).
_COMMIT_INTERVAL_S = 1.0


def group_id(share_name: str, topic_filter: str) -> str:
    """The Kafka consumer group of ``$share/{share_name}/{topic_filter}``: readable, and one
    per (name, filter) pair, since the same name with another filter is another group
    (§4.8.2); the filter is hashed because it may hold characters a group id should not."""
    digest = hashlib.sha256(topic_filter.encode()).hexdigest()[:16]
    return f"bayou-share.{share_name}.{digest}"


class ShareHandler(Protocol):
    """The loop side of a shared subscription's consumer (all calls on the event loop)."""

    # Per assigned partition, the offset below which everything is done (read by the thread).
    committable: Mapping[TP, int]

    def assigned(self, starts: dict[TP, int]) -> None:
        """These partitions are this node's now, read from these offsets (-1: the end)."""

    def records(self, records: list[Record]) -> None:
        """A batch of records of the assigned partitions."""

    def revoked(self, partitions: list[TP]) -> dict[TP, int]:
        """These partitions are no longer this node's: forget them; the offsets to commit."""


class ShareReader:
    """One node's member of a shared subscription's consumer group (see the module docs)."""

    def __init__(
        self,
        bootstrap: str,
        group: str,
        topics: list[str],
        handler: ShareHandler,
        *,
        starts: Mapping[TP, int],
        session_timeout_ms: int,
        fetch_wait_ms: int,
        security: KafkaSecurity,
    ) -> None:
        self.group = group
        self.topics = topics
        self.handler = handler
        # Where a partition the group never committed begins: the node's delivery positions
        # when the shared subscription started here, so nothing published after its first
        # SUBSCRIBE is missed while the group forms (a join takes seconds).
        self._starts = dict(starts)
        self._conf: dict[str, Any] = {
            **client_conf(bootstrap, f"bayou-{group}", security),
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "latest",
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": max(500, session_timeout_ms // 3),
            "fetch.wait.max.ms": fetch_wait_ms,
            "isolation.level": "read_committed",
            "log_level": 3,
        }
        self.paused = False
        self._running = False
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._assigned: set[TP] = set()

    def start(self) -> None:
        """Join the group on a thread (the join itself takes a few polls)."""
        if self._stopped:
            return
        self._loop = asyncio.get_running_loop()
        self._running = True
        self._thread = threading.Thread(target=self._run, name=f"bayou-{self.group}", daemon=True)
        self._thread.start()

    def start_after(self, _before: asyncio.Future[None]) -> None:
        """:meth:`start`, as the done callback of another reader's stop."""
        self.start()

    async def stop(self) -> None:
        """Leave the group (committing what is done) and close the consumer."""
        self._stopped = True
        self._running = False
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)

    # the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            consumer = Consumer(self._conf)
            consumer.subscribe(
                self.topics,
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
        except KafkaException:
            log.exception("shared subscription %s: cannot join the group", self.group)
            return
        committed: dict[TP, int] = {}
        last_commit = time.monotonic()
        paused = False
        try:
            while self._running:
                if self.paused != paused:
                    paused = self.paused
                    parts = consumer.assignment()
                    (consumer.pause if paused else consumer.resume)(parts)
                msgs = consumer.consume(5000, 0.1)
                records = self._records(msgs)
                if records:
                    self._call_soon(self.handler.records, records)
                now = time.monotonic()
                if now - last_commit >= _COMMIT_INTERVAL_S:
                    last_commit = now
                    offsets = {k: o for k, o in self.handler.committable.items()
                               if k in self._assigned}  # fmt: skip
                    if offsets and offsets != committed:
                        self._commit(consumer, offsets, asynchronous=True)
                        committed = offsets
        finally:
            # close() revokes the partitions first: _on_revoke commits what is done.
            consumer.close()

    def _records(self, msgs: list[Any]) -> list[Record]:
        records: list[Record] = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("shared subscription %s: %s", self.group, err)
                continue
            records.append(
                Record(m.topic(), m.partition(), m.offset(), m.key(), m.headers() or [],
                       m.value(), m.timestamp()[1])
            )  # fmt: skip
        return records

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            committed = consumer.committed(partitions, timeout=10)
        except KafkaException as exc:
            log.warning("shared subscription %s: committed offsets unknown: %s", self.group, exc)
            committed = partitions
        starts: dict[TP, int] = {}
        for tp in committed:
            key = (tp.topic, tp.partition)
            offset = tp.offset if tp.offset >= 0 else self._starts.get(key, OFFSET_END)
            starts[key] = offset
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in starts.items()])
        self._assigned |= set(starts)
        self._call_soon(self.handler.assigned, starts)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._assigned -= set(keys)
        offsets = self._on_loop(self.handler.revoked, keys)
        if offsets:
            self._commit(consumer, offsets, asynchronous=False)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The group moved on without us (a session timeout): committing would be refused.
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._assigned -= set(keys)
        self._on_loop(self.handler.revoked, keys)

    def _commit(self, consumer: Consumer, offsets: Mapping[TP, int], asynchronous: bool) -> None:
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            if asynchronous:
                consumer.commit(offsets=tps, asynchronous=True)
            else:
                consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            # Not fatal: the next commit (or the next owner, from an older offset) goes on.
            log.warning("shared subscription %s: commit failed: %s", self.group, exc)

    def _call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed during shutdown
            pass

    def _on_loop(self, fn: Callable[..., T], *args: Any) -> T | None:
        """Run ``fn`` on the event loop after everything handed over before it; its result."""
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn(*args))
            except BaseException as exc:
                done.set_exception(exc)

        try:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(run)
            return done.result(timeout=10)
        except (RuntimeError, concurrent.futures.TimeoutError):
            return None  # the loop is gone: commit nothing, the next owner starts earlier
        except Exception:
            log.exception("shared subscription %s: handing partitions back failed", self.group)
            return None
