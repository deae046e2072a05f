"""The built-in demo agent: windowed stats, threshold alerts and ``cool`` commands per device.

An :class:`agents.app.App` named ``demo`` (:func:`demo_app`), run by ``bayou worker`` (and
``bayou up``) when no ``--agents`` module is given, on the same runtime as every other app
(:mod:`agents.runtime.loop`): state in RocksDB under ``<state_dir>/apps/demo`` and in the
compacted changelog topic ``bayou.changelog.demo``, consumer group ``<group_id>.demo``.

Contract (other tools rely on it):

- Input: topic ``config.telemetry_topic`` (``bayou.telemetry``); key = device id (UTF-8 bytes;
  when absent, the ``{device}`` level of the ``mqtt.topic`` header ``sensors/{device}/telemetry``;
  records of other MQTT topics are not the demo's and are skipped); value JSON
  ``{"temperature": float, "humidity": float, "ts": float epoch seconds}``.
- Outputs, all to ``config.outbound_topic`` with key = device id and headers from
  :meth:`ingress.contract.OutboundMessage.headers` plus ``bayou.result_id``
  (``bayou.ingress_ts`` copied from the input for alerts and commands; window stats belong to
  no single input, so they carry none):

  - ``sensors/{device}/stats`` (QoS 1): ``{"device", "window_start", "window_end", "count",
    "mean", "min", "max"}`` of the temperature over ``config.window_seconds`` tumbling windows
    (aligned to the epoch), published once the window's end plus ``config.grace_seconds`` has
    passed (below); result id ``device|start|end``;
  - ``alerts/{device}`` (QoS 1): ``{"device", "temperature", "threshold", "ts"}`` when
    temperature > ``config.threshold``, at most once per device per
    ``config.alert_cooldown_seconds`` of event time (a device that stays hot alerts again at its
    first hot reading one cool-down after the last alert; a reading older than the device's
    latest reading never alerts: event time decides, as in :mod:`agents.alerting`); result id
    ``hot|device|ts|fired``;
  - ``devices/{device}/commands`` (QoS 1): ``{"command": "cool", "device", "reason":
    "temperature", "issued_at": wall clock epoch seconds, "command_id"}`` with each alert; result
    id that of its alert with ``#1`` appended. A command expects a response within
    :data:`COMMAND_TIMEOUT_S` (docs/agents.md, "Commands with a response"): the demo's fleet
    answers on ``devices/{device}/commands/response/{command_id}``.
- Invalid records (not JSON, failing :class:`Reading`, or no device id) go to
  ``config.deadletter_topic`` with the original bytes and the ``bayou.error`` etc. headers; the
  header ``bayou.agent`` is ``demo.telemetry`` (in ``bayou_agent_dead_letters_total``: labels
  ``app="demo"``, ``agent="telemetry"``).
- Command latency (``bayou_agent_command_latency_seconds``) is counted per device group
  ``group-0`` .. ``group-3`` (:func:`device_group`).

Window closing rule (per input partition, :mod:`agents.runtime.engine`). Each partition of the input
topic has its own watermark: the highest event ``ts`` of its records (capped at ``wall_now +
config.max_clock_skew_seconds``, so a device with a clock far in the future cannot close
windows early), moved on by the wall clock only while the partition has no new records and the
worker has caught up with it. A window ``[start, end)`` of a device closes, and its stats are
published, when the watermark of the device's partition reaches ``end + grace``. So a reading
with ``ts >= end + grace`` closes the windows of its partition at once (also when replaying old
data fast), and in the live demo, where ``ts`` tracks the wall clock, a window closes about
``grace`` seconds after its end even when its devices go quiet; another partition's readings,
or the wall clock while a partition has a backlog, never close it. The watermark is part of the
partition's state, so it survives a restart or a move to another worker. Readings for a window
that has already closed are late: left out of the stats (``Window.late`` counts them); they
still alert (unless older than their device's latest reading, see above).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from agents import AlertRule, App, Context, Max, Mean, Min, Out, Threshold, Tumbling, WindowResult
from agents.runtime.config import WorkerConfig

APP_NAME = "demo"
AGENT_NAME = "telemetry"
# Seconds a device has to answer a ``cool`` command before the tracker times it out.
COMMAND_TIMEOUT_S = 30.0
"""The agent's name: dead letters say ``demo.telemetry``."""
TELEMETRY_PATTERN = "sensors/{device}/telemetry"


class Reading(BaseModel):
    """One telemetry reading. Strict: numbers must be JSON numbers, finite, no extra fields."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    temperature: float
    humidity: float
    ts: float


DEVICE_GROUPS = 4


def device_group(device: str) -> str:
    """The demo's device groups, for command latency per group: ``group-0`` .. ``group-3``,
    by a stable hash of the device id (a real fleet would use its sites or models)."""
    return f"group-{zlib.crc32(device.encode()) % DEVICE_GROUPS}"


def demo_app(config: WorkerConfig, *, clock: Callable[[], float] = time.time) -> App:
    """The demo as an :class:`App` (see the module docs); ``clock`` gives ``issued_at``."""
    app = App(APP_NAME, device_group=device_group)
    stats = app.window(
        "temperature",
        Tumbling(config.window_seconds, grace=config.grace_seconds),
        {"mean": Mean(), "min": Min(), "max": Max()},
    )
    threshold = config.threshold
    # Notifications, not conditions: a device still hot one cool-down later alerts again.
    hot = app.alerter(
        AlertRule(
            "hot", Threshold(above=threshold), cooldown=config.alert_cooldown_seconds, repeat=True
        )
    )

    @app.agent(
        TELEMETRY_PATTERN,
        model=Reading,
        event_time="ts",
        kafka_topic=config.telemetry_topic,
        name=AGENT_NAME,
    )
    async def on_reading(r: Reading, ctx: Context) -> None:
        device = ctx.key
        if not device:  # no record key and an empty {device} level: dead-lettered
            raise ValueError("no device id")
        stats.add(device, ctx.ts, r.temperature)  # False when late: the reading still alerts
        for ev in hot.observe(device, ctx.ts, r.temperature):
            if ev.kind != "fired":
                continue
            alert = {"device": device, "temperature": r.temperature, "threshold": threshold,
                     "ts": r.ts}  # fmt: skip
            ctx.publish(f"alerts/{device}", alert, qos=1, result_id=ev.id)
            command = {"command": "cool", "device": device, "reason": "temperature",
                       "issued_at": clock()}  # fmt: skip
            ctx.command(f"devices/{device}/commands", command, result_id=ev.id,
                        expect_response=COMMAND_TIMEOUT_S)  # fmt: skip

    @stats.on_close
    def publish_stats(w: WindowResult, out: Out) -> None:
        payload = {
            "device": w.key,
            "window_start": w.start,
            "window_end": w.end,
            "count": w.count,
            "mean": w.values["mean"],
            "min": w.values["min"],
            "max": w.values["max"],
        }
        out.publish(f"sensors/{w.key}/stats", payload, qos=1)

    return app
