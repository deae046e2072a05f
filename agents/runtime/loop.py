"""Runs data teams' :class:`agents.app.App` objects: the worker's batch loop.

One consumer (group ``<group_id>.<app names>``) reads every app's input topics. Each loop:
poll a batch (:class:`agents.runtime.kafka_clients.GroupConsumer`); apply the rebalances of
that poll (revoked partitions' state is dropped, assigned ones are restored:
:mod:`agents.runtime.store`);
process the batch (:mod:`agents.runtime.batch`: outputs, webhook calls, changelog); write RocksDB;
commit the input offsets (with exactly-once: commit the transaction, then write RocksDB).

The input offsets folded into the state are part of the state (``["o", topic]`` entries), so
input redelivered after a crash between the changelog and the offset commit is skipped, not
counted twice: window results and state are exactly-once; outputs are at-least-once, each with a
deterministic ``bayou.result_id`` that the ingress uses to drop a repeat before a device sees it.

``processing_guarantee="exactly_once"`` (``BAYOU_WORKER_PROCESSING_GUARANTEE``) puts each batch's
outputs, dead letters, changelog records and input offsets in one Kafka transaction; readers with
``isolation.level=read_committed`` (the ingress, other workers, the restore) see all of a batch or
none of it. If the transaction fails, it is aborted, the state of every partition is dropped and
restored from what was committed, and the input is read again from the committed offsets.
Webhook calls are outside Kafka: at-least-once in both modes.

Why Bayou's own loop and not a faust-streaming worker (which the DESIGN names): measured in the
same benchmark run, stock Faust counts about 3 % of the records/s of a hand-written loop (its
per-event stream machinery; ``stream.take`` batches cannot carry table updates, which Faust
ties to the current event), where this loop does ~0.9; Faust's table recovery trusts
ListOffsets, which under-reports on the embedded broker, and it commits input offsets without
waiting for its changelog writes, losing table updates on a SIGKILL (DESIGN §10). See
docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import time
from collections.abc import Sequence

from agents.app import App
from agents.runtime import metrics
from agents.runtime.batch import init_metrics, process_batch
from agents.runtime.config import WorkerConfig
from agents.runtime.engine import Record
from agents.runtime.global_follower import Follower
from agents.runtime.kafka_clients import TP, BatchProducer, GroupConsumer, is_retriable_txn
from agents.runtime.store import AppRunner
from agents.runtime.webhooks import WebhookCaller

__all__ = ["default_group", "run_apps", "transactional_id"]

log = logging.getLogger(__name__)

POLL_TIMEOUT_S = 0.2


def default_group(config: WorkerConfig, apps: Sequence[App]) -> str:
    """The consumer group of a worker running ``apps``: one per set of app names."""
    return f"{config.group_id}.{'+'.join(sorted(a.name for a in apps))}"


def transactional_id(config: WorkerConfig, group: str) -> str:
    """Stable per worker (host and state dir), unique among the group's workers: a restarted
    worker aborts the transaction its previous run left open instead of waiting for it to
    time out."""
    where = hashlib.sha1(str(config.state_dir.resolve()).encode()).hexdigest()[:10]
    return f"{group}.{socket.gethostname()}.{where}"


async def run_apps(
    config: WorkerConfig,
    apps: Sequence[App],
    stop: asyncio.Event,
    group_id: str | None = None,
    *,
    main: bool = True,
) -> None:
    """Run ``apps`` until ``stop`` is set (see the module docs). ``main``: this loop's
    assignment is what ``bayou_agent_ready`` and ``bayou_agent_assigned_partitions`` report
    (False for the command tracker's loop beside the apps')."""
    runners = [AppRunner(a, config) for a in apps]
    hooks = WebhookCaller(
        config.webhook_retries, config.webhook_timeout_seconds, config.webhook_backoff_seconds
    )
    # Every global table is caught up before the first record (agents.global_tables).
    tables = [g for a in apps for g in a.global_tables]
    follower = Follower(config.kafka_bootstrap, tables, security=config.kafka_security)
    follower.start()
    try:
        await asyncio.to_thread(follower.wait_caught_up)
        await _loop(config, runners, stop, group_id, hooks, follower, main)
    finally:
        follower.stop()
        await hooks.close()
        for r in runners:
            r.store.close()


async def _sync(runners: list[AppRunner], assigned: set[TP]) -> None:
    """Hold exactly the state of the ``assigned`` partitions."""
    for r in runners:
        mine = {p for t, p in assigned if t in r.engine.by_topic}
        r.revoke(r.owned - mine)
        await r.restore(mine)


def _next_offsets(records: list[Record]) -> dict[TP, int]:
    out: dict[TP, int] = {}
    for rec in records:
        out[(rec.topic(), rec.partition())] = rec.offset() + 1
    return out


async def _loop(
    config: WorkerConfig,
    runners: list[AppRunner],
    stop: asyncio.Event,
    group_id: str | None,
    hooks: WebhookCaller,
    follower: Follower,
    main: bool,
) -> None:
    topics = sorted({t for r in runners for t in r.engine.topics})
    group = group_id or default_group(config, [r.app for r in runners])
    eos = config.processing_guarantee == "exactly_once"
    consumer = GroupConsumer(
        config.kafka_bootstrap, group, topics,
        session_timeout_ms=config.session_timeout_ms, fetch_max_wait_ms=config.fetch_max_wait_ms,
        security=config.kafka_security,
    )  # fmt: skip
    producer = BatchProducer(
        config.kafka_bootstrap,
        transactional_id(config, group) if eos else None,
        config.transaction_timeout_ms,
        security=config.kafka_security,
    )
    init_metrics(runners)
    lag = metrics.LagMetric()
    await producer.start()
    await consumer.start()
    resync = False
    try:
        while not stop.is_set():
            records, events = await consumer.poll(config.batch_max_records, POLL_TIMEOUT_S)
            follower.check()
            if events or resync:
                # A partition revoked and given back within one poll may have been another
                # worker's meanwhile: its state here is stale, so it is dropped and restored.
                revoked = {tp for ev in events if ev.kind == "revoked" for tp in ev.partitions}
                for r in runners:
                    r.revoke({p for t, p in revoked if t in r.engine.by_topic})
                await _sync(runners, consumer.assigned)
                resync = False
                if main:
                    metrics.ASSIGNED_PARTITIONS.set(len(consumer.assigned))
                if any(ev.kind == "assigned" for ev in events):
                    if main:
                        metrics.READY.set(1)
                    log.info("%s assigned %d partition(s)", group, len(consumer.assigned))
            t0 = time.perf_counter()
            offsets = _next_offsets(records)
            backlog = await consumer.backlog()
            lag.update(consumer.lag, consumer.assigned)
            if not eos:
                pending = await process_batch(config, producer, runners, records, hooks, backlog)
                pending.write()
                if offsets:
                    await consumer.commit(offsets)
            else:
                producer.begin()
                try:
                    pending = await process_batch(
                        config, producer, runners, records, hooks, backlog
                    )
                    await producer.commit(offsets, consumer.group_metadata())
                except Exception as exc:
                    if not is_retriable_txn(exc):
                        raise
                    log.warning(
                        "batch transaction failed (%s); re-reading from the last commit", exc
                    )
                    await producer.abort()
                    for r in runners:
                        r.revoke(set(r.owned))
                    await consumer.rewind()
                    resync = True
                    continue
                pending.write()
            if records:
                metrics.BATCH_SECONDS.observe(time.perf_counter() - t0)
    finally:
        if main:
            metrics.READY.set(0)
            metrics.ASSIGNED_PARTITIONS.set(0)
        lag.clear()
        await consumer.close()
        await producer.close()
