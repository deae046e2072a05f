"""Re-run apps over past data in Kafka into a separate topic (``bayou replay``).

What a replay does, and what it never does:

- Each app starts from empty state in memory: not the live worker's RocksDB, not its changelog,
  and it writes no state anywhere. Time is event time only (no wall clock), as in
  :func:`agents.testing.run_app`.
- It reads every input partition of the apps with no consumer group (partitions are assigned,
  offsets never committed), from ``offsets_for_times(from)`` up to the end of the partition
  when the replay first fetches it: the high watermark of that Fetch response, never
  ListOffsets (it under-reports on the embedded broker, DESIGN §10). Records with a Kafka
  timestamp before ``from`` (or at or after ``until``) are skipped, so a broker that answers
  ``offsets_for_times`` with an earlier offset (the embedded broker answers the log start)
  replays the same records.
- Every output goes to the replay topic, ``bayou.replay.<app>`` (or one topic given for all
  apps), never to ``bayou.outbound``, a device, a Kafka topic named by the app, or
  ``bayou.deadletter``; webhooks are not called. Each record keeps the output's key and payload
  and says what it was in headers: ``bayou.replay.kind`` (``mqtt``, ``kafka``, ``webhook``,
  ``deadletter``), ``bayou.replay.topic`` (the MQTT topic, Kafka topic or URL; for a dead
  letter the input's MQTT topic), ``bayou.result_id``, ``bayou.agent``, ``mqtt.qos`` and
  ``mqtt.retain`` for MQTT outputs, ``bayou.error`` for dead letters. Result ids are those a
  live worker gives, so a replay's outputs can be compared with the live ones.
- With ``until``, once the records are read time moves on to ``until`` (as the wall clock
  would have moved it live): windows that ended by then close, absence alerts due by then
  fire. Without it, windows still open at the end stay open.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from confluent_kafka import Producer

from agents.app import App, Output
from agents.runtime.engine import AppEngine, Record, record
from agents.runtime.store import resolve_topic
from ingress.contract import (
    H_DEADLETTER_AGENT,
    H_DEADLETTER_REASON,
    H_MQTT_QOS,
    H_MQTT_RETAIN,
    H_RESULT_ID,
    Headers,
)
from kafkaio.clients import client_conf
from kafkaio.reader import TP, PartitionReader, ReadError
from kafkaio.security import PLAINTEXT, KafkaSecurity

log = logging.getLogger(__name__)

H_REPLAY_KIND = "bayou.replay.kind"
H_REPLAY_TOPIC = "bayou.replay.topic"
IDLE_TIMEOUT_S = 30.0
BATCH = 1000


def replay_topic(app_name: str) -> str:
    """The default topic of an app's replayed outputs."""
    return f"bayou.replay.{app_name}"


@dataclass
class AppSummary:
    """What one app did in a replay."""

    records: int = 0
    outputs: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    topic: str = ""

    @property
    def written(self) -> int:
        """Records written to the replay topic (dead letters included)."""
        return sum(self.outputs.values())


@dataclass
class ReplaySummary:
    """What a replay read and wrote."""

    partitions: int = 0
    records_read: int = 0
    records_skipped: int = 0
    apps: dict[str, AppSummary] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The summary ``bayou replay`` prints."""
        out = [
            f"replay: read {self.records_read} record(s) in range from {self.partitions} "
            f"partition(s) ({self.records_skipped} outside the time range skipped)"
        ]
        for name, s in self.apps.items():
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(s.outputs.items())) or "none"
            out.append(
                f"replay: app {name}: {s.records} input record(s), {s.written} output(s) "
                f"written to {s.topic} ({kinds}), {s.dead_letters} dead letter(s)"
            )
        return out


def _record(o: Output) -> tuple[bytes | None, bytes, Headers]:
    headers: Headers = [
        (H_REPLAY_KIND, o.kind.encode()),
        (H_REPLAY_TOPIC, o.topic.encode()),
        (H_RESULT_ID, o.result_id.encode()),
        (H_DEADLETTER_AGENT, o.agent.encode()),
    ]
    if o.kind == "mqtt":
        headers += [(H_MQTT_QOS, str(o.qos).encode()), (H_MQTT_RETAIN, b"1" if o.retain else b"0")]
    elif o.kind == "deadletter":
        headers.append((H_DEADLETTER_REASON, o.reason.encode()))
    return o.key, o.payload, headers


class _Reader:
    """Reads the input partitions once, from a time to the end present when first fetched.
    Blocking calls (confluent-kafka); the replay runs them in a thread."""

    def __init__(
        self, bootstrap: str, topics: Sequence[str], start_ms: int, security: KafkaSecurity
    ) -> None:
        # Never joined (partitions are assigned) and never committed: a fresh name per run.
        name = f"replay-{uuid.uuid4().hex}"
        self._reader = PartitionReader(bootstrap, name, security=security)
        wanted: list[TP] = []
        for topic in topics:
            try:
                wanted += self._reader.partitions([topic], timeout=10)
            except ReadError:
                log.warning("replay: topic %s has no partitions; nothing to read there", topic)
        self.partitions = len(wanted)
        starts = self._reader.offsets_for_time(wanted, start_ms)
        self._reader.assign(starts, to_first_end=True)

    @property
    def pending(self) -> set[TP]:
        """The partitions not read to their end yet."""
        return self._reader.remaining

    def read(self) -> list[Record]:
        """The next records (empty when there were none for a while)."""
        return [
            record(r.topic, r.partition, r.offset, r.key, r.value,
                   [(k, v or b"") for k, v in r.headers], max(r.timestamp_ms, 0))
            for r in self._reader.poll(0.5, BATCH).records
        ]  # fmt: skip

    def close(self) -> None:
        self._reader.close()


async def replay(
    bootstrap: str,
    apps: Sequence[App],
    routes: Sequence[tuple[str, str]],
    start_ms: int,
    until_ms: int | None = None,
    output_topic: str | None = None,
    security: KafkaSecurity = PLAINTEXT,
) -> ReplaySummary:
    """Replay ``apps`` over their input records with Kafka timestamps in ``[start_ms,
    until_ms)`` (module docs). The output topics must exist."""
    engines = [AppEngine(a, lambda agent: resolve_topic(agent, routes)) for a in apps]
    summary = ReplaySummary()
    for e in engines:
        summary.apps[e.app.name] = AppSummary(topic=output_topic or replay_topic(e.app.name))
    topics = sorted({t for e in engines for t in e.topics})
    reader = await asyncio.to_thread(_Reader, bootstrap, topics, start_ms, security)
    summary.partitions = reader.partitions
    conf = {**client_conf(bootstrap, "bayou-replay", security), "acks": "all", "linger.ms": 5}
    producer = Producer(conf)
    failed: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    async def emit(e: AppEngine, outputs: list[Output]) -> None:
        s = summary.apps[e.app.name]
        for o in outputs:
            key, value, headers = _record(o)
            while True:
                try:
                    producer.produce(
                        s.topic, value, key, headers=cast(Any, headers), on_delivery=delivered
                    )
                    break
                except BufferError:  # the local queue is full: let deliveries drain
                    await asyncio.to_thread(producer.poll, 0.1)
            producer.poll(0)
            s.outputs[o.kind] = s.outputs.get(o.kind, 0) + 1
            s.dead_letters += o.kind == "deadletter"

    try:
        idle_since = time.monotonic()
        while reader.pending:
            records = await asyncio.to_thread(reader.read)
            if not records:
                if time.monotonic() - idle_since > IDLE_TIMEOUT_S:
                    raise TimeoutError(
                        f"replay: no records for {IDLE_TIMEOUT_S:g} s from partitions "
                        f"{sorted(reader.pending)}"
                    )
                continue
            idle_since = time.monotonic()
            in_range = [
                r
                for r in records
                if r.timestamp()[1] >= start_ms
                and (until_ms is None or r.timestamp()[1] < until_ms)
            ]
            summary.records_read += len(in_range)
            summary.records_skipped += len(records) - len(in_range)
            # One record a batch, as run_app: windows close after each input at the watermark.
            for e in engines:
                for rec in in_range:
                    await emit(e, await e.process([rec], None))
                    await emit(e, await e.advance(None))
                e.state_changes()  # nothing is kept; drop the tracked changes
        for e in engines:
            if until_ms is not None:
                await emit(e, await e.advance(None, until_ms / 1000.0))
            summary.apps[e.app.name].records = e.counts.records
        left = await asyncio.to_thread(producer.flush, 30)
        if left or failed:
            raise RuntimeError(
                f"replay: {left} output(s) not acknowledged, {len(failed)} failed "
                f"({'; '.join(failed[:3])})"
            )
    finally:
        await asyncio.to_thread(producer.flush, 5)
        await asyncio.to_thread(reader.close)
    return summary
