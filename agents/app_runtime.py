"""Runs data teams' :class:`agents.app.App` objects in the batch loop, with state that survives.

One consumer (group ``<group_id>.<app names>``) reads every app's input topics. Per batch, in
this order (as :mod:`agents.runtime`):

1. ``getmany``; run each app's agents over its records (validation failures → dead letters);
2. close windows at the watermark and tick alerters (every loop, also when idle), run their
   ``on_close`` / ``on_event`` callbacks;
3. produce every output and await every acknowledgement; then make the batch's webhook calls
   (concurrently, with retries, bounded in time: :mod:`agents.webhooks`) and produce a dead
   letter for each call whose last try failed, and await those; only then produce every state
   change to the app's compacted changelog topic ``bayou.changelog.<app>`` (same partition
   number as the input partition of the key) and await those (state that says "input folded"
   must never reach Kafka before that input's outputs and calls are done: a worker restoring
   it would skip the input);
4. write the state changes and the changelog offsets reached to RocksDB
   (``<state_dir>/apps/<app>``), in one write batch;
5. commit the input offsets.

The input offsets folded into the state are part of the state (``["o", topic]`` entries), so
input redelivered after a crash between 3 and 5 is skipped, not counted twice.

On assignment, each partition's state is loaded from RocksDB, then the changelog is read from
the offset RocksDB reached up to its end — so an empty state dir (a new machine) restores all of
it from Kafka. The end is the high watermark Fetch reports (confluent-kafka with
``enable.partition.eof``), never ListOffsets, which under-reports on the embedded broker
(DESIGN §10). On revocation the partition's keys are dropped from memory (the loop has already
flushed them: it commits after every batch, before fetching again).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError
from rocksdict import Options, Rdict, WriteBatch

from agents import metrics
from agents.app import AgentSpec, App, AppError, Output, check_json
from agents.app_core import AppEngine
from agents.config import WorkerConfig
from agents.webhooks import WebhookCaller, WebhookResult, dead_letter
from ingress.contract import (
    H_DEADLETTER_AGENT,
    H_DEADLETTER_REASON,
    H_DEADLETTER_SOURCE_OFFSET,
    H_DEADLETTER_SOURCE_PARTITION,
    H_DEADLETTER_SOURCE_TOPIC,
    H_MQTT_TOPIC,
    H_RESULT_ID,
    Headers,
    OutboundMessage,
)

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 200
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
    bootstrap: str, topic: str, starts: dict[int, int]
) -> dict[int, tuple[dict[str, Any], int]]:
    """Per partition, the changelog's entries from ``starts[p]`` to its end, last value wins,
    and the next offset. The end is where Fetch reports end of partition (its high watermark).
    Blocking (run it in a thread)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    out: dict[int, tuple[dict[str, Any], int]] = {p: ({}, s) for p, s in starts.items()}
    if not starts:
        return out
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bayou-changelog-restore",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, s) for p, s in starts.items()])
        pending = set(starts)
        deadline = time.monotonic() + RESTORE_TIMEOUT_S
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"restoring {topic} partitions {sorted(pending)} took too long")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            p, off, key = msg.partition(), msg.offset(), msg.key()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(p)
                    continue
                raise RuntimeError(f"reading {topic}: {err}")
            assert p is not None and off is not None and key is not None
            entries, _ = out[p]
            value = msg.value()
            entries[key.decode()] = None if value is None else json.loads(value)
            out[p] = (entries, off + 1)
    finally:
        consumer.close()
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

    async def restore(self, partitions: set[int]) -> None:
        """Load ``partitions`` from RocksDB, then the changelog tail."""
        new = partitions - self.owned
        if not new:
            return
        local = {p: self.store.load(p) for p in new}
        starts = {p: off for p, (_, off) in local.items()}
        tails = await asyncio.to_thread(
            read_changelog, self.config.kafka_bootstrap, self.changelog, starts
        )
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


_DEFAULT_JSON = json.JSONEncoder()
_STRICT_JSON = json.JSONEncoder(allow_nan=False)
_TABLE_ENTRY = '["t",'


def _state_json(app_name: str, ek: str, value: Any) -> bytes:
    """A state entry's value as JSON, encoded once for the changelog and RocksDB; a table's
    value is checked again (an agent may have changed it after ``put``)."""
    if ek.startswith(_TABLE_ENTRY):
        try:
            return _STRICT_JSON.encode(value).encode()
        except (TypeError, ValueError):
            _, table, key = json.loads(ek)
            check_json(value, f"app {app_name!r} table {table!r} key {key!r}")  # raises
            raise
    return _DEFAULT_JSON.encode(value).encode()


def _to_record(o: Output, config: WorkerConfig) -> tuple[str, bytes | None, bytes, Headers]:
    rid = (H_RESULT_ID, o.result_id.encode())
    if o.kind == "mqtt":
        msg = OutboundMessage(mqtt_topic=o.topic, payload=b"", qos=o.qos, retain=o.retain)
        return config.outbound_topic, o.key, o.payload, [*msg.headers(o.ingress_ts_ms), rid]
    if o.kind == "kafka":
        return o.topic, o.key, o.payload, [rid]
    src_topic, src_part, src_off = o.result_id.rsplit("/", 2)
    headers: Headers = [(H_MQTT_TOPIC, o.topic.encode())] if o.topic else []
    headers += [
        (H_DEADLETTER_REASON, o.reason.encode()),
        (H_DEADLETTER_SOURCE_TOPIC, src_topic.encode()),
        (H_DEADLETTER_SOURCE_PARTITION, src_part.encode()),
        (H_DEADLETTER_SOURCE_OFFSET, src_off.encode()),
        (H_DEADLETTER_AGENT, o.agent.encode()),
        rid,
    ]
    return config.deadletter_topic, o.key, o.payload, headers


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Drops and restores partition state; waits for a batch in progress to write its state
    (the rebalance callbacks run in aiokafka's coordinator task, beside the loop)."""

    def __init__(self, runners: list[AppRunner], lock: asyncio.Lock) -> None:
        self.runners = runners
        self.lock = lock

    async def on_partitions_revoked(self, revoked: Any) -> None:
        metrics.ASSIGNED_PARTITIONS.set(0)
        async with self.lock:
            for r in self.runners:
                r.revoke({tp.partition for tp in revoked if tp.topic in r.engine.by_topic})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        async with self.lock:
            for r in self.runners:
                mine = {tp.partition for tp in assigned if tp.topic in r.engine.by_topic}
                r.revoke(r.owned - mine)
                await r.restore(mine)
        metrics.ASSIGNED_PARTITIONS.set(len(assigned))
        metrics.READY.set(1)
        log.info("agent worker assigned %d partition(s)", len(assigned))


async def run_apps(
    config: WorkerConfig, apps: Sequence[App], stop: asyncio.Event, group_id: str | None = None
) -> None:
    """Run ``apps`` until ``stop`` is set (see the module docs)."""
    runners = [AppRunner(a, config) for a in apps]
    hooks = WebhookCaller(
        config.webhook_retries, config.webhook_timeout_seconds, config.webhook_backoff_seconds
    )
    try:
        await _loop(config, runners, stop, group_id, hooks)
    finally:
        await hooks.close()
        for r in runners:
            r.store.close()


def _labels(agent: str) -> tuple[str, str]:
    """``(app, name)`` of an output's ``agent`` (``<app>.<name>``)."""
    app_name, _, name = agent.partition(".")
    return app_name, name


def _init_metrics(runners: list[AppRunner]) -> None:
    """Every label set at 0, so a dashboard sees the series before the first event."""
    for r in runners:
        names = [a.name for a in r.app.agents] + [name for _, name in r.app.parts]
        for a in r.app.agents:
            metrics.DEAD_LETTERS.labels(f"{r.app.name}.{a.name}")
        for name in names:
            for counter in (
                metrics.APP_ALERTS_FIRED,
                metrics.APP_ALERTS_RESOLVED,
                metrics.APP_COMMANDS_SENT,
                metrics.APP_WEBHOOK_OK,
                metrics.APP_WEBHOOK_FAILED,
                metrics.APP_WEBHOOK_RETRIES,
            ):
                counter.labels(r.app.name, name)


def _count_webhooks(results: list[WebhookResult]) -> None:
    for res in results:
        labels = _labels(res.output.agent)
        (metrics.APP_WEBHOOK_OK if res.ok else metrics.APP_WEBHOOK_FAILED).labels(*labels).inc()
        if res.tries > 1:
            metrics.APP_WEBHOOK_RETRIES.labels(*labels).inc(res.tries - 1)


async def _loop(
    config: WorkerConfig,
    runners: list[AppRunner],
    stop: asyncio.Event,
    group_id: str | None,
    hooks: WebhookCaller,
) -> None:
    topics = sorted({t for r in runners for t in r.engine.topics})
    group = group_id or f"{config.group_id}.{'+'.join(sorted(r.app.name for r in runners))}"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=config.kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=config.fetch_max_wait_ms,
        session_timeout_ms=config.session_timeout_ms,
        heartbeat_interval_ms=max(500, config.session_timeout_ms // 3),
        # Restoring a changelog happens inside the rebalance callback.
        max_poll_interval_ms=300_000,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=config.kafka_bootstrap, acks="all", linger_ms=1, enable_idempotence=False
    )
    lock = asyncio.Lock()
    consumer.subscribe(topics, listener=_Listener(runners, lock))
    _init_metrics(runners)
    await producer.start()
    try:
        await consumer.start()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(
                    timeout_ms=POLL_TIMEOUT_MS, max_records=config.batch_max_records
                )
                t0 = time.perf_counter()
                async with lock:
                    lag = await _backlog(consumer)
                    await _batch(config, producer, runners, batches, hooks, lag)
                if batches:
                    try:
                        await consumer.commit(
                            {tp: recs[-1].offset + 1 for tp, recs in batches.items()}
                        )
                    except CommitFailedError:
                        log.warning("offset commit failed after a rebalance; input will be re-read")
                    metrics.BATCH_SECONDS.observe(time.perf_counter() - t0)
        finally:
            metrics.READY.set(0)
            metrics.ASSIGNED_PARTITIONS.set(0)
            await consumer.stop()
    finally:
        await producer.stop()


async def _backlog(consumer: AIOKafkaConsumer) -> set[tuple[str, int]]:
    """The assigned ``(topic, partition)`` pairs not caught up: the consumer's position (past
    the records ``getmany`` returned) has not reached the high watermark of the last Fetch, or
    none is known yet (just assigned)."""
    out: set[tuple[str, int]] = set()
    for tp in consumer.assignment():
        try:
            hw = consumer.highwater(tp)
            behind = hw is None or await consumer.position(tp) < hw
        except Exception:  # revoked meanwhile: the rebalance drops its state anyway
            behind = True
        if behind:
            out.add((tp.topic, tp.partition))
    return out


async def _batch(
    config: WorkerConfig,
    producer: AIOKafkaProducer,
    runners: list[AppRunner],
    batches: dict[Any, list[Any]],
    hooks: WebhookCaller,
    backlog: set[tuple[str, int]] | None = None,
) -> None:
    """Steps 1-4 of the module docs (the caller commits); ``backlog``: the input partitions
    not caught up (their watermarks do not move with the wall clock)."""
    wall_now = time.time()
    records = [rec for recs in batches.values() for rec in recs]
    sends: list[Any] = []
    calls: list[Output] = []
    commands: list[Output] = []
    log_sends: list[Any] = []
    changes: list[dict[int, dict[str, bytes | None]]] = []
    for r in runners:
        windows_before = r.engine.counts.windows
        outputs = await r.engine.process(records, wall_now) if records else []
        lagging = {p for t, p in backlog or () if t in r.engine.by_topic}
        outputs += await r.engine.advance(wall_now, backlog=lagging)
        for o in outputs:
            if o.kind == "webhook":
                calls.append(o)
                continue
            topic, key, value, headers = _to_record(o, config)
            sends.append(await producer.send(topic, value=value, key=key, headers=headers))
            if o.kind == "deadletter":
                metrics.DEAD_LETTERS.labels(o.agent).inc()
            elif o.command:
                commands.append(o)
        metrics.WINDOW_RESULTS.inc(r.engine.counts.windows - windows_before)
        alerts, r.engine.counts.alerts = r.engine.counts.alerts, {}
        for (name, kind), n in alerts.items():
            counter = metrics.APP_ALERTS_FIRED if kind == "fired" else metrics.APP_ALERTS_RESOLVED
            counter.labels(r.app.name, name).inc(n)
        ch = r.engine.state_changes()
        encoded: dict[int, dict[str, bytes | None]] = {}
        for p, entries in ch.items():
            enc = encoded[p] = {}
            for ek, value in entries.items():
                v = None if value is None else _state_json(r.app.name, ek, value)
                enc[ek] = v
                log_sends.append((r.changelog, v, ek.encode(), p))
        changes.append(encoded)
    await asyncio.gather(*sends)
    for o in commands:
        metrics.APP_COMMANDS_SENT.labels(*_labels(o.agent)).inc()
    if calls:
        results = await hooks.call_all(calls)
        dead = []
        for res in results:
            if not res.ok:
                key, value, headers = dead_letter(res)
                dead.append(
                    await producer.send(
                        config.deadletter_topic, value=value, key=key, headers=headers
                    )
                )
        await asyncio.gather(*dead)
        _count_webhooks(results)
    futures = [
        await producer.send(topic, value=v, key=k, partition=p) for topic, v, k, p in log_sends
    ]
    metas = await asyncio.gather(*futures)
    # The changelog offsets reached, per app and partition, from the acknowledgements.
    for r, ch in zip(runners, changes, strict=True):
        reached = {
            m.partition: m.offset + 1 for m in metas if m.topic == r.changelog
        }  # offsets ascend per partition, so the last one wins
        r.store.write(ch, reached)
    metrics.RECORDS_IN.inc(len(records))
