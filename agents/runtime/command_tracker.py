"""The command tracker: the built-in app that keeps every closed-loop command's status.

An ordinary :class:`agents.app.App` (``bayou-commands``), run by every worker unless
``BAYOU_WORKER_TRACK_COMMANDS=false``: its agent folds the events of ``bayou.commands`` (keyed by
command id, so all of a command's events are in one partition) into its table ``status``
(:func:`agents.commands.fold`), and a timer times out the commands of the worker's partitions
whose deadline passed (:func:`agents.commands.expire`) and forgets final ones after
``BAYOU_COMMAND_RETENTION_SECONDS``. The table is in RocksDB and its changelog like any app's
state, so it survives restarts and moves with its partitions; other apps read all of it with
:func:`agents.commands.command_statuses`.

Built on the App API rather than as a separate consumer so that restore, rebalancing and
exactly-once are the ones every app has.
"""

from __future__ import annotations

import json
from typing import Any

from agents.app import App, AppError, Context, Out
from agents.commands import STATUS_TABLE, TRACKER_APP, Entry, expire, fold, is_final
from agents.runtime import metrics
from agents.runtime.config import WorkerConfig
from ingress.contract.commands import ACKNOWLEDGED, SENT, STATUSES, response_topic

CHECK_INTERVAL_S = 1.0


def _count(entry: Entry, reached: list[str]) -> None:
    app = str(entry.get("app") or "unknown")
    for status in reached:
        metrics.COMMANDS.labels(app, status).inc()
        if status == ACKNOWLEDGED:
            sent, acked = entry.get("sent_at_ms"), entry.get("acknowledged_at_ms")
            if isinstance(sent, int) and isinstance(acked, int):
                metrics.COMMAND_RESPONSE.labels(app).observe(max(acked - sent, 0) / 1000)


def _final_at(entry: Entry) -> int:
    at = (
        entry.get("acknowledged_at_ms")
        or entry.get("refused_at_ms")
        or entry.get("timed_out_at_ms")
        or 0
    )
    return int(at) if isinstance(at, int | float) else 0


def tracker_app(config: WorkerConfig) -> App:
    """The tracker app for a worker with ``config``."""
    app = App(TRACKER_APP)
    status = app.table(STATUS_TABLE)
    retention_ms = int(config.command_retention_seconds * 1000)
    apps_seen: set[str] = set()

    @app.agent("#", kafka_topic=config.commands_topic, name="events")
    async def events(raw: bytes, ctx: Context) -> None:
        try:
            event = json.loads(raw)
        except ValueError as exc:
            raise AppError(f"command event is not JSON: {exc}") from None
        if not isinstance(event, dict) or event.get("status") not in STATUSES:
            raise AppError(f"command event without a known status: {raw[:200]!r}")
        entry, reached = fold(status.get(ctx.key), event)
        status.put(ctx.key, entry)
        _count(entry, reached)
        if entry.get("app"):
            # Its pending gauge exists from the first command on (0 when each is answered
            # within a check), so a dashboard or alert sees the app at all.
            apps_seen.add(str(entry["app"]))

    @app.timer(CHECK_INTERVAL_S, name="check")
    def check(now: float, _out: Out) -> None:
        now_ms = int(now * 1000)
        pending: dict[str, int] = dict.fromkeys(apps_seen, 0)
        for key, entry in status.scan():
            timed_out = expire(entry, now_ms)
            if timed_out is not None:
                entry = timed_out[0]
                status.put(key, entry)
                _count(entry, timed_out[1])
            if is_final(entry):
                if now_ms - _final_at(entry) > retention_ms:
                    status.delete(key)
            else:
                name = str(entry.get("app") or "unknown")
                pending[name] = pending.get(name, 0) + 1
        for name, n in pending.items():
            apps_seen.add(name)
            metrics.COMMANDS_PENDING.labels(name).set(n)

    return app


def sent_event(output: Any, now_ms: int) -> bytes:
    """The ``sent`` event of a command output (an :class:`agents.app.Output` with an id)."""
    app_name, _, agent = output.agent.partition(".")
    timeout_s: float = output.expect_response
    event = {
        "status": SENT,
        "app": app_name,
        "agent": agent,
        "topic": output.topic,
        "device": output.key.decode("utf-8", "replace") if output.key else "",
        "response_topic": response_topic(output.topic, output.command_id),
        "sent_at_ms": now_ms,
        "deadline_ms": now_ms + round(timeout_s * 1000),
    }
    return json.dumps(event, separators=(",", ":")).encode()
