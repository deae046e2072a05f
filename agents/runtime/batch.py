"""One batch of the agent runtime: records in; outputs, webhook calls and state out, in order.

The order (:func:`process_batch`; the loop in :mod:`agents.runtime.loop` commits afterwards):

1. run each app's agents over the batch's records (validation failures → dead letters); close
   windows at the watermarks and tick alerters (every loop, also when idle), run their
   ``on_close`` / ``on_event`` callbacks;
2. produce every output and await every acknowledgement; then make the batch's webhook calls
   (concurrently, with retries, bounded in time: :mod:`agents.runtime.webhooks`) and produce a dead
   letter for each call whose last try failed;
3. produce every state change to the app's changelog and await the acknowledgements. State that
   says "input folded" must never reach Kafka before that input's outputs and calls are done:
   a worker restoring it would skip the input. With exactly-once all of it is one transaction,
   committed with the input offsets by the loop, so the order inside does not matter;
4. the caller writes the state changes and the changelog offsets reached to RocksDB once the
   batch is safe in Kafka (:meth:`Pending.write`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from agents.app import Output, check_json
from agents.runtime import metrics
from agents.runtime.command_tracker import sent_event
from agents.runtime.config import WorkerConfig
from agents.runtime.engine import Record
from agents.runtime.kafka_clients import BatchProducer
from agents.runtime.store import AppRunner
from agents.runtime.webhooks import WebhookCaller, WebhookResult, dead_letter
from ingress.contract import (
    H_COMMAND_ID,
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
        out: Headers = [*msg.headers(o.ingress_ts_ms), rid, *o.properties]
        if o.command_id:
            out.append((H_COMMAND_ID, o.command_id.encode()))
        return config.outbound_topic, o.key, o.payload, out
    if o.kind == "kafka":
        return o.topic, o.key, o.payload, [rid]
    if o.callback:  # a window result or alert event whose callback raised: no input record
        why = (H_DEADLETTER_REASON, o.reason.encode())
        return (
            config.deadletter_topic,
            o.key,
            o.payload,
            [why, (H_DEADLETTER_AGENT, o.agent.encode()), rid],
        )
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


def _labels(agent: str) -> tuple[str, str]:
    """``(app, name)`` of an output's ``agent`` (``<app>.<name>``)."""
    app_name, _, name = agent.partition(".")
    return app_name, name


def init_metrics(runners: list[AppRunner]) -> None:
    """Every label set at 0, so a dashboard sees the series before the first event."""
    for r in runners:
        names = [a.name for a in r.app.agents] + [name for _, name in r.app.parts]
        for a in r.app.agents:
            metrics.RECORDS_IN.labels(r.app.name, a.name)
        for kind, name in r.app.parts:
            if kind == "w":
                metrics.LATE_EVENTS.labels(r.app.name, name)
                metrics.WINDOW_RESULTS.labels(r.app.name, name)
        for name in names:
            for reason in metrics.DEAD_LETTER_REASONS:
                metrics.DEAD_LETTERS.labels(r.app.name, name, reason)
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
        if not res.ok:
            metrics.DEAD_LETTERS.labels(*labels, "webhook_failed").inc()


def _count_engine(r: AppRunner) -> None:
    """Move what the app's engine counted since the last batch into the metrics."""
    counts = r.engine.counts
    for name, n in counts.taken.items():
        metrics.RECORDS_IN.labels(r.app.name, name).inc(n)
    for name, n in counts.closed.items():
        metrics.WINDOW_RESULTS.labels(r.app.name, name).inc(n)
    counts.taken.clear()
    counts.closed.clear()


def _observe_commands(runners: list[AppRunner], commands: list[Output]) -> None:
    """Command latency, once Kafka has the commands: from their input's ``bayou.ingress_ts``."""
    if not commands:
        return
    now_ms = time.time() * 1000
    apps = {r.app.name: r.app for r in runners}
    for o in commands:
        if o.ingress_ts_ms is None:
            continue
        app_name, _ = _labels(o.agent)
        app = apps.get(app_name)
        if app is None:
            continue
        device = o.key.decode(errors="replace") if o.key else o.topic
        metrics.COMMAND_LATENCY.labels(app_name, app.group_of(device)).observe(
            max(now_ms - o.ingress_ts_ms, 0) / 1000
        )


@dataclass
class Pending:
    """A processed batch's state changes, to write to RocksDB once the batch is in Kafka."""

    runners: list[AppRunner]
    changes: list[dict[int, dict[str, bytes | None]]]
    delivered: list[Message]

    def write(self) -> None:
        """Write each app's changes and the changelog offsets reached, one write batch each."""
        reached: dict[str, dict[int, int]] = {r.changelog: {} for r in self.runners}
        for m in self.delivered:
            per_part = reached.get(m.topic())  # type: ignore[arg-type]
            if per_part is not None:
                p, off = m.partition(), m.offset()
                assert p is not None and off is not None
                if off >= per_part.get(p, 0):
                    per_part[p] = off + 1
        for r, ch in zip(self.runners, self.changes, strict=True):
            r.store.write(ch, reached[r.changelog])


async def process_batch(
    config: WorkerConfig,
    producer: BatchProducer,
    runners: list[AppRunner],
    records: list[Record],
    hooks: WebhookCaller,
    backlog: set[tuple[str, int]],
) -> Pending:
    """Steps 1-3 of the module docs; ``backlog``: the input partitions not caught up (their
    watermarks do not move with the wall clock)."""
    wall_now = time.time()
    calls: list[Output] = []
    commands: list[Output] = []
    log_sends: list[tuple[str, bytes | None, bytes, int]] = []
    changes: list[dict[int, dict[str, bytes | None]]] = []
    send = producer.send
    for r in runners:
        outputs = await r.engine.process(records, wall_now) if records else []
        lagging = {p for t, p in backlog if t in r.engine.by_topic}
        outputs += await r.engine.advance(wall_now, backlog=lagging)
        for o in outputs:
            if o.kind == "webhook":
                calls.append(o)
                continue
            topic, key, value, headers = _to_record(o, config)
            send(topic, value, key, headers)
            if o.kind == "deadletter":
                metrics.DEAD_LETTERS.labels(*_labels(o.agent), o.reason_code or "agent_error").inc()
            elif o.command:
                commands.append(o)
                if o.command_id:  # tracked: its "sent" event goes with it
                    send(config.commands_topic, sent_event(o, int(wall_now * 1000)),
                         o.command_id.encode(), [])  # fmt: skip
        _count_engine(r)
        for (kind, name), part in r.app.parts.items():
            if kind == "w":
                late = getattr(part, "late_total", 0)
                seen = r.late_counted.get(name, 0)
                if late > seen:
                    metrics.LATE_EVENTS.labels(r.app.name, name).inc(late - seen)
                    r.late_counted[name] = late
        alerts, r.engine.counts.alerts = r.engine.counts.alerts, {}
        for (name, kind), n in alerts.items():
            counter = metrics.APP_ALERTS_FIRED if kind == "fired" else metrics.APP_ALERTS_RESOLVED
            counter.labels(r.app.name, name).inc(n)
        encoded: dict[int, dict[str, bytes | None]] = {}
        for p, entries in r.engine.state_changes().items():
            enc = encoded[p] = {}
            for ek, value in entries.items():
                v = None if value is None else _state_json(r.app.name, ek, value)
                enc[ek] = v
                log_sends.append((r.changelog, v, ek.encode(), p))
        changes.append(encoded)
    delivered = await producer.flush() if not producer.transactional else []
    for o in commands:
        metrics.APP_COMMANDS_SENT.labels(*_labels(o.agent)).inc()
    if not producer.transactional:
        # Kafka has acknowledged the commands now, before the webhook calls and the changelog.
        _observe_commands(runners, commands)
    if calls:
        results = await hooks.call_all(calls)
        failed = [res for res in results if not res.ok]
        for res in failed:
            key, value, headers = dead_letter(res)
            send(config.deadletter_topic, value, key, headers)
        if failed and not producer.transactional:
            delivered += await producer.flush()
        _count_webhooks(results)
    for topic, v, k, p in log_sends:
        send(topic, v, k, partition=p)
    delivered += await producer.flush()
    if producer.transactional:
        # The first flush of a transaction's records is this one; the loop commits after it:
        # the commands are in Kafka, not yet visible.
        _observe_commands(runners, commands)
    return Pending(runners, changes, delivered)
