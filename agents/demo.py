"""The built-in demo agent: windowed stats, threshold alerts and ``cool`` commands per device.

Contract (other tools rely on it):

- Input: topic ``config.telemetry_topic`` (``bayou.telemetry``); key = device id (UTF-8 bytes;
  when absent, the 2nd level of the ``mqtt.topic`` header ``sensors/{device}/telemetry``);
  value JSON ``{"temperature": float, "humidity": float, "ts": float epoch seconds}``.
- Outputs, all to ``config.outbound_topic`` with key = device id and headers from
  :meth:`ingress.contract.OutboundMessage.headers` (``bayou.ingress_ts`` copied from the input
  for alerts and commands; window stats belong to no single input, so they carry none):

  - ``sensors/{device}/stats`` (QoS 1): ``{"device", "window_start", "window_end", "count",
    "mean", "min", "max"}`` of the temperature over ``config.window_seconds`` tumbling windows;
  - ``alerts/{device}`` (QoS 1): ``{"device", "temperature", "threshold", "ts"}`` when
    temperature > ``config.threshold``, at most once per device per
    ``config.alert_cooldown_seconds`` of event time;
  - ``devices/{device}/commands`` (QoS 1): ``{"command": "cool", "device", "reason":
    "temperature", "issued_at": wall clock epoch seconds}`` with each alert.
- Invalid records (not JSON, failing :class:`Reading`, or no device id) go to
  ``config.deadletter_topic`` with the original bytes and ``bayou.error`` etc. headers.

Window closing rule. The worker's watermark is event-time based, advanced by the wall clock
while the input is idle::

    watermark = max_ts + max(0, wall_now - wall_at_max_ts)

where ``max_ts`` is the highest event ``ts`` this worker has seen (capped at
``wall_now + config.max_clock_skew_seconds`` so one device with a clock far in the future
cannot close everyone's windows) and ``wall_at_max_ts`` the wall clock when it was seen. A window
``[start, end)`` closes, and its stats are published, when ``end + grace <= watermark``. So a
reading with ``ts >= end + grace`` closes the window at once (also when replaying old data fast),
and in the live demo, where ``ts`` tracks the wall clock, a window closes about ``grace`` seconds
after its end even when its devices go quiet (the runtime checks every loop, at least once a
second). Readings for an already-closed window are late: dropped from the stats and counted;
they still alert.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from agents.alerts import AlertDeduper
from agents.config import WorkerConfig
from agents.state import StateStore, TopicPartitionKey
from agents.windows import ClosedWindow, TumblingAggregator
from ingress.contract import (
    H_DEADLETTER_AGENT,
    H_DEADLETTER_REASON,
    H_DEADLETTER_SOURCE_OFFSET,
    H_DEADLETTER_SOURCE_PARTITION,
    H_DEADLETTER_SOURCE_TOPIC,
    H_INGRESS_TS,
    H_MQTT_TOPIC,
    Headers,
    OutboundMessage,
)

AGENT_NAME = "demo"


class Reading(BaseModel):
    """One telemetry reading. Strict: numbers must be JSON numbers, finite, no extra fields."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    temperature: float
    humidity: float
    ts: float


class InputRecord(Protocol):
    """What the agent reads of a Kafka record (aiokafka's ``ConsumerRecord`` fits)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(frozen=True, slots=True)
class OutRecord:
    """A record to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers


@dataclass(slots=True)
class BatchResult:
    """What one batch (or timer tick) produced, with counts for the metrics."""

    outputs: list[OutRecord] = field(default_factory=list)
    records: int = 0
    skipped: int = 0
    dead_letters: int = 0
    alerts: int = 0
    commands: int = 0
    windows: int = 0
    late: int = 0


def _dumps(obj: dict[str, object]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _one_line(err: ValidationError) -> str:
    """A validation error as one short line (pydantic's own text spans several)."""
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts).replace("\n", " ")[:500]


class DemoAgent:
    """The demo logic over batches of records; I/O-free apart from the optional state store."""

    def __init__(self, config: WorkerConfig, store: StateStore | None, wall_now: float) -> None:
        self.config = config
        self.store = store
        self.windows = TumblingAggregator(config.window_seconds, config.grace_seconds)
        self.deduper = AlertDeduper(config.alert_cooldown_seconds)
        self._folded: dict[TopicPartitionKey, int] = {}
        self._pending_offsets: dict[TopicPartitionKey, int] = {}
        if store is not None:
            for key, stats in store.load_windows().items():
                self.windows.restore(key, stats)
            self.deduper.load(store.load_alerts().items())
            self.windows.watermark = store.load_watermark()
            self._folded = store.load_offsets()
        # After a restart, event time resumes where the saved watermark left it.
        self._max_ts = self.windows.watermark
        self._wall_at_max = wall_now

    def watermark(self, wall_now: float) -> float:
        """The current watermark (see the module docstring)."""
        if self._max_ts == -math.inf:
            return -math.inf
        return self._max_ts + max(0.0, wall_now - self._wall_at_max)

    def process(self, records: Sequence[InputRecord], wall_now: float) -> BatchResult:
        """Fold a batch of input records in, then close the windows the watermark passed."""
        res = BatchResult()
        cfg = self.config
        ts_cap = wall_now + cfg.max_clock_skew_seconds
        for rec in records:
            tp = (rec.topic, rec.partition)
            if rec.offset < self._folded.get(tp, 0):
                res.skipped += 1  # already in the state store (see agents.state)
                continue
            self._pending_offsets[tp] = rec.offset + 1
            res.records += 1
            mqtt_topic: bytes | None = None
            ingress_ts: int | None = None
            for name, hval in rec.headers:
                if name == H_MQTT_TOPIC:
                    mqtt_topic = hval
                elif name == H_INGRESS_TS:
                    try:
                        ingress_ts = int(hval)
                    except ValueError:
                        ingress_ts = None
            device = self._device(rec.key, mqtt_topic)
            if device is None:
                res.outputs.append(self._dead_letter(rec, mqtt_topic, "no device id"))
                res.dead_letters += 1
                continue
            if rec.value is None:
                res.outputs.append(self._dead_letter(rec, mqtt_topic, "empty record value"))
                res.dead_letters += 1
                continue
            try:
                reading = Reading.model_validate_json(rec.value)
            except ValidationError as err:
                res.outputs.append(self._dead_letter(rec, mqtt_topic, _one_line(err)))
                res.dead_letters += 1
                continue
            ts = reading.ts
            if not self.windows.add(device, ts, reading.temperature):
                res.late += 1
            capped = ts if ts < ts_cap else ts_cap
            if capped > self._max_ts:
                self._max_ts = capped
                self._wall_at_max = wall_now
            if reading.temperature > cfg.threshold and self.deduper.allow(device, ts):
                self._alert(res, device, reading, ingress_ts, wall_now)
        self._close(res, wall_now)
        return res

    def tick(self, wall_now: float) -> BatchResult:
        """Close the windows the watermark passed while no input arrived."""
        res = BatchResult()
        self._close(res, wall_now)
        return res

    def flush(self) -> None:
        """Write what changed since the last flush to the state store, in one batch."""
        offsets, self._pending_offsets = self._pending_offsets, {}
        self._folded.update(offsets)
        windows = self.windows.take_changes()
        alerts = self.deduper.take_changes()
        if self.store is not None:
            self.store.write(windows, alerts, self.windows.watermark, offsets)

    @staticmethod
    def _device(key: bytes | None, mqtt_topic: bytes | None) -> str | None:
        try:
            if key:
                return key.decode()
            if mqtt_topic:
                levels = mqtt_topic.decode().split("/")
                if len(levels) >= 2 and levels[1]:
                    return levels[1]
        except UnicodeDecodeError:
            return None
        return None

    def _dead_letter(self, rec: InputRecord, mqtt_topic: bytes | None, reason: str) -> OutRecord:
        headers: Headers = []
        if mqtt_topic is not None:
            headers.append((H_MQTT_TOPIC, mqtt_topic))
        headers += [
            (H_DEADLETTER_REASON, reason.encode()),
            (H_DEADLETTER_SOURCE_TOPIC, rec.topic.encode()),
            (H_DEADLETTER_SOURCE_PARTITION, str(rec.partition).encode()),
            (H_DEADLETTER_SOURCE_OFFSET, str(rec.offset).encode()),
            (H_DEADLETTER_AGENT, AGENT_NAME.encode()),
        ]
        return OutRecord(self.config.deadletter_topic, rec.key, rec.value, headers)

    def _out(
        self, mqtt_topic: str, device: str, payload: bytes, ingress_ts: int | None
    ) -> OutRecord:
        key = device.encode()
        msg = OutboundMessage(mqtt_topic=mqtt_topic, payload=payload, qos=1, key=key)
        return OutRecord(self.config.outbound_topic, key, payload, msg.headers(ingress_ts))

    def _alert(
        self, res: BatchResult, device: str, r: Reading, ingress_ts: int | None, wall_now: float
    ) -> None:
        alert = {
            "device": device,
            "temperature": r.temperature,
            "threshold": self.config.threshold,
            "ts": r.ts,
        }
        command: dict[str, object] = {
            "command": "cool",
            "device": device,
            "reason": "temperature",
            "issued_at": wall_now,
        }
        res.outputs.append(self._out(f"alerts/{device}", device, _dumps(alert), ingress_ts))
        res.outputs.append(
            self._out(f"devices/{device}/commands", device, _dumps(command), ingress_ts)
        )
        res.alerts += 1
        res.commands += 1

    def _close(self, res: BatchResult, wall_now: float) -> None:
        closed: list[ClosedWindow] = self.windows.close(self.watermark(wall_now))
        for w in closed:
            topic = f"sensors/{w.device}/stats"
            res.outputs.append(self._out(topic, w.device, _dumps(w.as_json()), None))
        res.windows += len(closed)
