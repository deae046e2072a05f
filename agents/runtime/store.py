"""An app's state in a worker: RocksDB, the compacted changelog, and restoring from them.

Layout of the RocksDB of an app (``<state_dir>/apps/<app>``): ``s:<partition>\\0<entry>`` → the
entry's JSON (entries: :mod:`agents.runtime.engine`), ``c:<partition>`` → the next changelog offset
already in the store. The changelog ``bayou.changelog.<app>`` has the same entries as keys, on
the same partition number as the input partition they belong to.

On assignment, each partition's state is loaded from RocksDB, then the changelog is read from
the offset RocksDB reached up to its end — so an empty state dir (a new machine) restores all of
it from Kafka. The end is where Fetch reports the end of the partition (confluent-kafka with
``enable.partition.eof``), not ListOffsets, which under-reports on the embedded broker (DESIGN
§10); ListOffsets only tells whether an open transaction holds the end back (an under-report
there can only end the wait early, and exactly-once is not run on the embedded broker). The
restore reads committed records only (``read_committed``, librdkafka's default): with
exactly-once, the changelog of an aborted batch is never restored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition
from rocksdict import Options, Rdict, WriteBatch

from agents.app import AgentSpec, App, AppError
from agents.runtime.config import WorkerConfig
from agents.runtime.engine import AppEngine
from kafkaio.reader import PartitionReader
from kafkaio.security import PLAINTEXT, KafkaSecurity

log = logging.getLogger(__name__)

RESTORE_TIMEOUT_S = 60.0


def changelog_topic(app_name: str) -> str:
    """The compacted topic holding an app's state."""
    return f"bayou.changelog.{app_name}"


def resolve_topic(agent: AgentSpec, routes: Sequence[tuple[str, str]]) -> str:
    """The agent's Kafka topic: ``kafka_topic=``, else the route rule with the same filter."""
    if agent.kafka_topic:
        return agent.kafka_topic
    from agents.app import Pattern

    for mqtt, kafka_topic in routes:
        if Pattern(mqtt).filter == agent.pattern.filter:
            return kafka_topic
    raise AppError(
        f"agent {agent.name!r}: no route rule maps {agent.pattern.pattern!r} to a Kafka topic; "
        "pass kafka_topic= or add a rule to BAYOU_ROUTES_FILE"
    )


class AppStore:
    """An app's RocksDB: ``s:<partition>\\0<entry>`` → JSON, ``c:<partition>`` → next changelog
    offset already in the store."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(path), Options(raw_mode=True))

    def load(self, partition: int) -> tuple[dict[str, Any], int]:
        """The partition's entries and the changelog offset they reach."""
        prefix = b"s:%d\0" % partition
        entries: dict[str, Any] = {}
        for k, v in self._db.items(from_key=prefix):
            if not isinstance(k, bytes) or not k.startswith(prefix):
                break
            if isinstance(v, bytes):
                entries[k[len(prefix) :].decode()] = json.loads(v)
        raw = self._db.get(b"c:%d" % partition)
        return entries, int(raw) if isinstance(raw, bytes) else 0

    def write(
        self, changes: Mapping[int, Mapping[str, Any]], changelog_next: dict[int, int]
    ) -> None:
        """Write one batch's changes and changelog offsets atomically (a value: JSON-safe, or
        its JSON text already encoded as bytes)."""
        if not changes and not changelog_next:
            return
        wb = WriteBatch(raw_mode=True)
        for p, entries in changes.items():
            prefix = b"s:%d\0" % p
            for ek, value in entries.items():
                if value is None:
                    wb.delete(prefix + ek.encode())
                else:
                    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
                    wb.put(prefix + ek.encode(), raw)
        for p, off in changelog_next.items():
            wb.put(b"c:%d" % p, str(off).encode())
        self._db.write(wb)

    def close(self) -> None:
        self._db.close()


def read_changelog(
    bootstrap: str,
    topic: str,
    starts: dict[int, int],
    open_txn_wait_s: float = 90.0,
    security: KafkaSecurity = PLAINTEXT,
) -> dict[int, tuple[dict[str, Any], int]]:
    """Per partition, the changelog's entries from ``starts[p]`` to its end, last value wins,
    and the next offset. Blocking (run it in a thread).

    The end: Fetch reports end of partition (its high watermark, not ListOffsets: DESIGN §10)
    *and* no transaction is open there. Committed records only are read (``read_committed``),
    and such a reader stops at the first open transaction (the last stable offset), so an end
    short of the high watermark means a transaction still open — a crashed worker's, which Kafka
    aborts after ``transaction.timeout.ms`` — and the restore waits for it rather than miss the
    committed records after it, for up to ``open_txn_wait_s``. A restore fails only when it
    makes no progress for ``RESTORE_TIMEOUT_S`` (a large changelog may take longer in all).
    """
    out: dict[int, tuple[dict[str, Any], int]] = {p: ({}, s) for p, s in starts.items()}
    if not starts:
        return out
    reader = PartitionReader(bootstrap, "changelog-restore", security=security, read_committed=True)
    # Its watermarks are the high watermarks (a read_committed reader's are the stable ones).
    probe = PartitionReader(bootstrap, "changelog-restore-probe", security=security)

    def at_end(p: int, position: int) -> bool:
        return position >= probe.high_watermark((topic, p))

    try:
        reader.assign({(topic, p): s for p, s in starts.items()})
        pending = set(starts)
        waiting: set[int] = set()  # at the stable end, short of the high watermark
        deadline = time.monotonic() + RESTORE_TIMEOUT_S
        while pending:
            now = time.monotonic()
            if now > deadline and (not waiting or pending - waiting):
                raise TimeoutError(
                    f"restoring {topic} partitions {sorted(pending)}: no progress for "
                    f"{RESTORE_TIMEOUT_S:.0f} s"
                )
            if waiting and not pending - waiting and now > deadline + open_txn_wait_s:
                raise TimeoutError(
                    f"restoring {topic}: a transaction stays open on partitions {sorted(waiting)}"
                )
            polled = reader.poll(0.5)
            if not polled.records and not polled.ends:
                positions = [TopicPartition(topic, p) for p in sorted(waiting)]
                for tp in reader.consumer.position(positions):
                    if tp.offset >= 0 and at_end(tp.partition, tp.offset):
                        pending.discard(tp.partition)
                        waiting.discard(tp.partition)
                continue
            for rec in polled.records:
                assert rec.key is not None
                deadline = time.monotonic() + RESTORE_TIMEOUT_S  # progress
                entries, _ = out[rec.partition]
                value = rec.value
                entries[rec.key.decode()] = None if value is None else json.loads(value)
                out[rec.partition] = (entries, rec.offset + 1)
            for (_, p), end in polled.ends.items():
                if at_end(p, end):
                    pending.discard(p)
                    waiting.discard(p)
                else:
                    waiting.add(p)
    finally:
        reader.close()
        probe.close()
    return out


class AppRunner:
    """One app in a worker: its engine, RocksDB store and changelog."""

    def __init__(self, app: App, config: WorkerConfig) -> None:
        self.app = app
        self.config = config
        self.engine = AppEngine(
            app, lambda a: resolve_topic(a, config.routes), config.max_clock_skew_seconds
        )
        self.changelog = changelog_topic(app.name)
        self.store = AppStore(config.state_dir / "apps" / app.name)
        self.owned: set[int] = set()
        # Per window: its late readings already counted in the metric.
        self.late_counted: dict[str, int] = {}

    async def restore(self, partitions: set[int]) -> None:
        """Load ``partitions`` from RocksDB, then the changelog tail."""
        new = partitions - self.owned
        if not new:
            return
        local = {p: self.store.load(p) for p in new}
        starts = {p: off for p, (_, off) in local.items()}
        tails = await asyncio.to_thread(
            read_changelog, self.config.kafka_bootstrap, self.changelog, starts,
            self.config.transaction_timeout_ms / 1000 + 30, self.config.kafka_security,
        )  # fmt: skip
        for p in sorted(new):
            entries, _ = local[p]
            tail, nxt = tails[p]
            entries.update(tail)
            entries = {k: v for k, v in entries.items() if v is not None}
            self.store.write({p: {**dict.fromkeys(tail), **entries}}, {p: nxt})
            self.engine.load(p, entries)
        self.owned |= new
        log.info("app %s: restored partitions %s", self.app.name, sorted(new))

    def revoke(self, partitions: set[int]) -> None:
        """Drop the state of ``partitions``."""
        gone = partitions & self.owned
        if gone:
            self.engine.drop(gone)
            self.owned -= gone
