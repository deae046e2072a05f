"""The API a data team writes: an :class:`App` with agents, windows, alerters and tables.

::

    app = App("thermostat")
    stats = app.window("temp", Tumbling(10, grace=2), {"mean": Mean(), "max": Max()})
    hot = app.alerter(AlertRule("hot", Threshold(above=30), cooldown=60))

    @app.agent("sensors/{device}/telemetry", model=Reading, event_time="ts")
    async def on_reading(r: Reading, ctx: Context) -> None:
        stats.add(ctx.key, ctx.ts, r.temperature)

An agent's MQTT pattern names the records it gets. Its Kafka topic is ``kafka_topic=`` when given,
else the topic of the route rule (``BAYOU_ROUTES_FILE``, default the demo routes) whose pattern
is the same filter (``sensors/{device}/telemetry`` and ``sensors/+/telemetry`` are the same); the
runtime resolves it at start and fails naming the agent when no rule fits. Records of that Kafka
topic whose ``mqtt.topic`` header does not match the pattern are not given to the agent.

Every output record carries the header :data:`H_RESULT_ID` (``bayou.result_id``, UTF-8 text):
``result_id=`` when given; else the ``"id"`` of a dict payload (``WindowResult.as_dict()`` →
``key|start|end``, ``AlertEvent.as_dict()`` → ``rule|key|fired_at|kind``); else the id of what
caused it (in ``on_close``: the window's id; in ``on_event``: the alert's id; in an agent: the
input record, ``<kafka topic>/<partition>/<offset>``). A second output with the same id from one
call gets ``#1``, ``#2``... appended. The same input therefore gives the same ids on any worker,
so a duplicate after a rebalance or restart is recognisable by ``(mqtt.topic, bayou.result_id)``.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from agents.alerting import Alerter, AlertEvent, AlertRule
from agents.commands import TRACKER_APP, command_id
from agents.global_tables import GlobalTable
from agents.mqtt5 import Properties as Mqtt5Properties
from agents.mqtt5 import headers_for, properties_of
from agents.reducers import ReducerLike
from agents.windowing import WindowedAggregator, WindowResult, WindowSpec
from ingress.contract.commands import response_topic
from ingress.contract.topics import TopicError, matches, validate_topic_filter

Payload = Mapping[str, Any] | bytes
log = logging.getLogger(__name__)
_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")
# Distinct device groups an app's command latency is counted under (the rest: "other").
MAX_DEVICE_GROUPS = 20
_LEVEL = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class AppError(ValueError):
    """An app defined wrongly (names, patterns) or that cannot be run as configured."""


@dataclass(frozen=True, slots=True)
class Output:
    """One record (or call) an app produced.

    ``kind``: ``"mqtt"`` (``topic`` is the MQTT topic; goes to ``bayou.outbound``), ``"kafka"``
    (``topic`` is the Kafka topic), ``"webhook"`` (``topic`` is the URL, ``payload`` the JSON
    body, ``headers`` the request headers; the runtime POSTs it, :func:`agents.testing.run_app`
    only returns it) or ``"deadletter"`` (``topic`` is the input's MQTT topic, ``payload`` the
    original bytes, ``reason`` why; or, with ``callback``, the window result or alert event
    whose callback raised).

    ``agent`` is ``<app>.<name>`` of what made it: the agent, or the window / alerter whose
    callback ran. ``command`` is True for :meth:`Out.command`.
    """

    kind: Literal["mqtt", "kafka", "webhook", "deadletter"]
    topic: str
    payload: bytes
    key: bytes | None = None
    qos: int = 0
    retain: bool = False
    result_id: str = ""
    reason: str = ""
    # A dead letter's reason from a fixed set (agents.runtime.metrics.DEAD_LETTER_REASONS):
    # the metric's label, where ``reason`` is the text for people.
    reason_code: str = ""
    agent: str = ""
    ingress_ts_ms: int | None = None
    command: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    # ``"mqtt"``: MQTT 5 properties as the record headers that carry them (agents.mqtt5).
    properties: tuple[tuple[str, bytes], ...] = ()
    retries: int | None = None
    timeout: float | None = None
    # A command that expects a response (Out.command's expect_response): its id, and the
    # seconds the device has to answer (agents.commands).
    command_id: str = ""
    expect_response: float | None = None
    callback: bool = False
    """A dead letter of a window result or alert event whose callback raised (``payload``: the
    result or event as JSON), not of an input record."""

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)


_STRICT_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def check_json(value: Any, what: str) -> str:
    """``value`` as JSON text; :class:`AppError` saying ``what`` is not JSON otherwise."""
    try:
        return _STRICT_JSON.encode(value)
    except (TypeError, ValueError) as err:
        raise AppError(f"{what}: not a JSON value ({err})") from err


def _encode(payload: Payload | Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return json.dumps(payload, separators=(",", ":")).encode()


def _key_bytes(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


class Out:
    """Output actions: what a callback (``on_close``, ``on_event``) can do."""

    # Slots, and ``_seen`` made on the first output: the runtime makes one Context per record.
    __slots__ = ("_cause_id", "_ingress_ts", "_key", "_seen", "_sink", "_source")

    def __init__(
        self,
        sink: list[Output],
        key: str | None,
        cause_id: str,
        ingress_ts_ms: int | None = None,
        source: str = "",
    ) -> None:
        self._sink = sink
        self._key = key
        self._cause_id = cause_id
        self._ingress_ts = ingress_ts_ms
        self._source = source
        self._seen: dict[str, int] | None = None

    def _rid(self, payload: Any, result_id: str | None) -> str:
        rid = result_id
        if rid is None and isinstance(payload, Mapping) and isinstance(payload.get("id"), str):
            rid = payload["id"]
        rid = rid or self._cause_id
        if self._seen is None:
            self._seen = {}
        n = self._seen.get(rid, 0)
        self._seen[rid] = n + 1
        return rid if n == 0 else f"{rid}#{n}"

    def publish(
        self,
        mqtt_topic: str,
        payload: Payload,
        *,
        qos: int = 0,
        retain: bool = False,
        result_id: str | None = None,
        **properties: Any,
    ) -> None:
        """Publish to MQTT subscribers of ``mqtt_topic`` (via ``bayou.outbound``); a dict
        payload is sent as JSON. ``properties``: MQTT 5 properties for MQTT 5 subscribers
        (``user_properties``, ``content_type``, ``response_topic``, ``correlation_data``,
        ``message_expiry`` in seconds: :func:`agents.mqtt5.headers_for`)."""
        self._publish(mqtt_topic, payload, qos, retain, result_id, properties, command=False)

    def _publish(
        self,
        mqtt_topic: str,
        payload: Payload,
        qos: int,
        retain: bool,
        result_id: str | None,
        properties: Mapping[str, Any],
        *,
        command: bool,
        expect_response: float | None = None,
    ) -> str:
        if qos not in (0, 1, 2):
            raise ValueError("qos must be 0, 1 or 2")
        rid = self._rid(payload, result_id)
        cid = ""
        if expect_response is not None:
            if not (isinstance(expect_response, int | float) and 0 < expect_response < math.inf):
                raise ValueError("expect_response must be a number of seconds > 0")
            if "response_topic" in properties or "correlation_data" in properties:
                raise ValueError(
                    "expect_response sets the response topic and correlation data itself"
                )
            cid = command_id(self._source, rid)
            properties = {**properties, "response_topic": response_topic(mqtt_topic, cid),
                          "correlation_data": cid.encode()}  # fmt: skip
            if isinstance(payload, Mapping) and "command_id" not in payload:
                # How a 3.1.1 device, which gets no Correlation Data, learns the id.
                payload = {**payload, "command_id": cid}
        props = headers_for(**properties) if properties else ()
        self._sink.append(
            Output("mqtt", mqtt_topic, _encode(payload), _key_bytes(self._key), qos, retain, rid,
                   agent=self._source, ingress_ts_ms=self._ingress_ts, command=command,
                   properties=props, command_id=cid, expect_response=expect_response)
        )  # fmt: skip
        return cid

    def command(
        self,
        mqtt_topic: str,
        payload: Payload,
        *,
        retain: bool = False,
        result_id: str | None = None,
        expect_response: float | None = None,
        **properties: Any,
    ) -> str:
        """Send a command to a device: :meth:`publish` with QoS 1 (and its ``properties``).

        With ``expect_response`` (seconds), the device is asked to answer and the command's
        status is tracked (docs/agents.md, "Commands with a response"): it gets an id (returned;
        else ``""``), the Response Topic ``<mqtt_topic>/response/<id>`` and the id as
        Correlation Data, and a dict payload a ``"command_id"`` field; the tracker's table
        (:func:`agents.commands.command_statuses`) says whether it was delivered, answered
        or timed out."""
        return self._publish(mqtt_topic, payload, 1, retain, result_id, properties,
                             command=True, expect_response=expect_response)  # fmt: skip

    def produce(
        self,
        kafka_topic: str,
        value: Payload,
        key: str | bytes | None = None,
        *,
        result_id: str | None = None,
    ) -> None:
        """Write a record to any Kafka topic (``key`` defaults to the current key)."""
        rid = self._rid(value, result_id)
        k = _key_bytes(key) if key is not None else _key_bytes(self._key)
        self._sink.append(
            Output("kafka", kafka_topic, _encode(value), k, result_id=rid, agent=self._source,
                   ingress_ts_ms=self._ingress_ts)
        )  # fmt: skip

    def webhook(
        self,
        url: str,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        retries: int | None = None,
        timeout: float | None = None,
        result_id: str | None = None,
    ) -> None:
        """POST ``json`` (any JSON value) to ``url`` once this batch's Kafka outputs are written.

        Retried on a connection error, a timeout, HTTP 408, 429 and 5xx: ``retries`` more tries
        (default ``BAYOU_WEBHOOK_RETRIES``), each of at most ``timeout`` seconds (default
        ``BAYOU_WEBHOOK_TIMEOUT_SECONDS``), with exponential backoff. After the last failed try
        (or at once on another status) the request goes to the dead-letter topic. The request
        carries the header ``Bayou-Result-Id``: the same call after a restart has the same id.
        """
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook url must be http:// or https://: {url!r}")
        if retries is not None and retries < 0:
            raise ValueError("retries must be >= 0")
        if timeout is not None and not timeout > 0:
            raise ValueError("timeout must be > 0")
        rid = self._rid(json, result_id)
        self._sink.append(
            Output("webhook", url, _encode(json), _key_bytes(self._key), result_id=rid,
                   agent=self._source, ingress_ts_ms=self._ingress_ts,
                   headers=tuple(sorted((headers or {}).items())), retries=retries,
                   timeout=timeout)
        )  # fmt: skip


class Context(Out):
    """What an agent gets with each record: its key, event time, topic, and output actions."""

    __slots__ = ("_headers", "_properties", "key", "mqtt_topic", "params", "ts")

    def __init__(
        self,
        sink: list[Output],
        *,
        key: str,
        ts: float,
        mqtt_topic: str,
        params: dict[str, str],
        cause_id: str,
        ingress_ts_ms: int | None,
        source: str = "",
        headers: Iterable[tuple[str, bytes]] = (),
    ) -> None:
        # Out.__init__ inlined: this runs once per record.
        self._headers = headers
        self._properties: Mqtt5Properties | None = None
        self._sink = sink
        self._key = key
        self._cause_id = cause_id
        self._ingress_ts = ingress_ts_ms
        self._source = source
        self._seen = None
        self.key = key
        """The record key (the device, with the demo routes)."""
        self.ts = ts
        """Event time: the ``event_time`` field, else the ingress time (epoch seconds)."""
        self.mqtt_topic = mqtt_topic
        self.params = params
        """The pattern's named levels: ``{"device": "dev-1"}`` for ``sensors/{device}/...``."""

    @property
    def properties(self) -> Mqtt5Properties:
        """The record's MQTT 5 properties (user properties, content type, response topic,
        correlation data...); empty for a 3.1.1 publish. Read from its headers on first use."""
        if self._properties is None:
            self._properties = properties_of(self._headers)
        return self._properties

    def reply(
        self, payload: Payload, *, qos: int = 1, result_id: str | None = None, **properties: Any
    ) -> None:
        """Answer an MQTT 5 request: publish to its Response Topic with its Correlation Data.
        AppError when the record has no response topic."""
        p = self.properties
        if p.response_topic is None:
            raise AppError(f"reply: the record on {self.mqtt_topic!r} has no response topic")
        if p.correlation_data is not None:
            properties.setdefault("correlation_data", p.correlation_data)
        self._publish(p.response_topic, payload, qos, False, result_id, properties, command=False)


AgentFn = Callable[[Any, Context], Awaitable[None]]
CloseFn = Callable[[WindowResult, Out], Any]
EventFn = Callable[[AlertEvent, Out], Any]
TimerFn = Callable[[float, Out], Any]


@dataclass(slots=True)
class TimerSpec:
    """A function the runtime calls every ``interval`` seconds of wall-clock time."""

    name: str
    interval: float
    fn: TimerFn
    due: float = -math.inf


_MATCH_CACHE_SIZE = 100_000


class Pattern:
    """An MQTT topic filter whose single levels may be named ``{name}``."""

    def __init__(self, pattern: str) -> None:
        levels = pattern.split("/")
        self.pattern = pattern
        self.levels = levels
        self.names = [m.group(1) if (m := _LEVEL.match(lv)) else None for lv in levels]
        self.filter = "/".join("+" if n else lv for n, lv in zip(self.names, levels, strict=True))
        try:
            validate_topic_filter(self.filter)
        except TopicError as exc:
            raise AppError(f"not a valid MQTT topic pattern: {pattern!r} ({exc})") from None
        self._cache: dict[str, dict[str, str] | None] = {}

    def match(self, topic: str) -> dict[str, str] | None:
        """The named levels when ``topic`` matches, else None."""
        # Devices publish to the same topics over and over: remember the answers (a copy
        # each time, as an agent may change its ``ctx.params``).
        cache = self._cache
        if topic in cache:
            hit = cache[topic]
            return None if hit is None else dict(hit)
        if len(cache) >= _MATCH_CACHE_SIZE:
            cache.clear()
        params = cache[topic] = self._match(topic)
        return None if params is None else dict(params)

    def _match(self, topic: str) -> dict[str, str] | None:
        # The broker's own matcher decides (with its '$'-topic rule, MQTT-4.7.2-1); only the
        # named levels are taken here.
        if not matches(self.filter, topic):
            return None
        parts = topic.split("/")
        return {name: parts[i] for i, name in enumerate(self.names) if name is not None}


@dataclass(slots=True)
class AgentSpec:
    """One registered agent."""

    name: str
    pattern: Pattern
    fn: AgentFn
    model: type[BaseModel] | None
    event_time: str | None
    kafka_topic: str | None
    source: str = ""
    """``<app>.<agent>``: what outputs and dead letters name as their agent."""


class _Keyed:
    """Shared by the stateful parts: records which input partition each key came from."""

    kind = ""

    def __init__(self, app: App, name: str) -> None:
        self.app = app
        self.name = name

    def _touch(self, key: str) -> None:
        p = self.app._current_partition
        if p is not None:
            self.app._key_partition[key] = p

    def _partition(self, key: str) -> int:
        """The input partition of ``key``'s state: the one of the record being processed, else
        the one the key last came from (0 for a key never seen)."""
        p = self.app._current_partition
        if p is not None:
            self.app._key_partition[key] = p
            return p
        return self.app._key_partition.get(key, 0)

    # The runtime's view (JSON-safe state per key, per input partition).
    def changes(self) -> dict[int, dict[str, Any]]:
        """Keys changed since the last call, per input partition: their state (None: delete)."""
        raise NotImplementedError

    def load(self, partition: int, keys: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def drop(self, partitions: set[int], keys: set[str]) -> None:
        """Forget the state of ``partitions`` (``keys``: the keys that came from them)."""
        raise NotImplementedError

    def holds(self, key: str) -> bool:
        """True unless this part surely keeps nothing of ``key`` (nor a change to write), so
        the app may forget the key's partition. Parts that cannot tell say True."""
        return True

    def reset(self) -> None:
        raise NotImplementedError


class Window(_Keyed):
    """A windowed aggregation of the app (:meth:`App.window`).

    One :class:`WindowedAggregator` per input partition: a window of a key closes at the
    watermark of the key's partition (:mod:`agents.runtime.engine`), and a reading is late when
    every window it belongs to has closed at that watermark.
    """

    kind = "w"

    def __init__(
        self, app: App, name: str, spec: WindowSpec, reducers: Mapping[str, ReducerLike]
    ) -> None:
        super().__init__(app, name)
        self._spec, self._reducers = spec, dict(reducers)
        self.aggregators: dict[int, WindowedAggregator] = {}
        """The aggregator of each input partition."""
        # Readings this worker dropped as late, ever (for the metric: never goes down).
        self.late_total = 0
        self.close_callbacks: list[CloseFn] = []

    def reset(self) -> None:
        self.aggregators = {}

    def aggregator(self, partition: int) -> WindowedAggregator:
        """The aggregator of ``partition`` (a new one starts at the partition's watermark)."""
        agg = self.aggregators.get(partition)
        if agg is None:
            agg = self.aggregators[partition] = WindowedAggregator(self._spec, self._reducers)
            agg.watermark = self.app._watermarks.get(partition, -math.inf)
        return agg

    def add(self, key: str, ts: float, value: float) -> bool:
        """Fold ``value`` at event time ``ts`` into ``key``'s windows; False when late."""
        if self.aggregator(self._partition(key)).add(key, ts, value):
            return True
        self.late_total += 1
        return False

    @property
    def late(self) -> int:
        """Readings dropped as late, over the partitions this worker holds."""
        return sum(a.late for a in self.aggregators.values())

    def on_close(self, fn: CloseFn) -> CloseFn:
        """Decorator: ``fn(result, out)`` runs for every window that closes."""
        self.close_callbacks.append(fn)
        return fn

    def changes(self) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for p, agg in self.aggregators.items():
            # Not copied: the runtime encodes them as JSON before the next record.
            ch = agg.changes(copy=False)
            if ch:
                out[p] = ch
        return out

    def load(self, partition: int, keys: Mapping[str, Any]) -> None:
        agg = self.aggregator(partition)
        snap = agg.snapshot()
        snap["keys"].update(keys)
        agg.restore(snap)

    def drop(self, partitions: set[int], keys: set[str]) -> None:
        for p in partitions:
            self.aggregators.pop(p, None)


class AlertHandle(_Keyed):
    """An alerter of the app (:meth:`App.alerter`): one :class:`Alerter` per input partition,
    so absence alerts fire at the watermark of the key's partition."""

    kind = "a"

    def __init__(self, app: App, name: str, rules: list[AlertRule]) -> None:
        super().__init__(app, name)
        self.rules = rules
        self.alerters: dict[int, Alerter] = {}
        """The alerter of each input partition."""
        self.event_callbacks: list[EventFn] = []

    def reset(self) -> None:
        self.alerters = {}

    def alerter(self, partition: int) -> Alerter:
        """The alerter of ``partition``."""
        al = self.alerters.get(partition)
        if al is None:
            al = self.alerters[partition] = Alerter(self.rules)
        return al

    def observe(self, key: str, ts: float, value: float) -> list[AlertEvent]:
        """Apply the rules to a reading; return the events it causes."""
        events = self.alerter(self._partition(key)).observe(key, ts, value)
        agent = self.app._current_agent
        if agent is not None:  # counted for the metrics by the engine running the agent
            self.app._alert_log += [(agent, ev.kind) for ev in events]
        return events

    def on_event(self, fn: EventFn) -> EventFn:
        """Decorator: ``fn(event, out)`` for events found by time passing (absence alerts);
        events of :meth:`observe` are returned to the agent instead."""
        self.event_callbacks.append(fn)
        return fn

    def changes(self) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for p, al in self.alerters.items():
            ch = al.changes()
            if ch:
                out[p] = ch
        return out

    def load(self, partition: int, keys: Mapping[str, Any]) -> None:
        al = self.alerter(partition)
        snap = al.snapshot()
        snap["keys"].update(keys)
        al.restore(snap)

    def drop(self, partitions: set[int], keys: set[str]) -> None:
        for p in partitions:
            self.alerters.pop(p, None)


class Table(_Keyed):
    """A per-key table of JSON values, e.g. the last known state of each device."""

    kind = "t"

    def __init__(self, app: App, name: str) -> None:
        super().__init__(app, name)
        self._data: dict[str, Any] = {}
        self._changed: set[str] = set()

    def reset(self) -> None:
        self._data.clear()
        self._changed.clear()

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        return self._data.get(key, default)

    def put(self, key: str, value: Any) -> None:
        """Set ``key`` to a JSON value (checked: :class:`AppError` naming the table and key
        otherwise, so an agent's record is dead-lettered); ``None`` deletes it."""
        if value is None:
            self.delete(key)
            return
        t = type(value)
        if t is float:
            if not math.isfinite(value):
                raise AppError(f"table {self.name!r} key {key!r}: {value!r} is not JSON")
        elif t is not int and t is not str and t is not bool:
            check_json(value, f"table {self.name!r} key {key!r}")
        self._touch(key)
        self._data[key] = value
        self._changed.add(key)

    def delete(self, key: str) -> None:
        """Remove ``key``."""
        if self._data.pop(key, None) is not None:
            self._changed.add(key)

    def items(self) -> list[tuple[str, Any]]:
        """Every ``(key, value)`` this worker holds (its partitions' keys), sorted."""
        return sorted(self._data.items())

    def scan(self) -> list[tuple[str, Any]]:
        """Every ``(key, value)`` this worker holds, unsorted (cheaper than :meth:`items`)."""
        return list(self._data.items())

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def changes(self) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        kp = self.app._key_partition
        deleted = []
        for k in sorted(self._changed):
            p = kp.get(k)
            if p is None:
                log.warning("app %s: key %r has no input partition; kept on 0", self.name, k)
                p = 0
            value = self._data.get(k)
            out.setdefault(p, {})[k] = value
            if value is None:
                deleted.append(k)
        self._changed.clear()
        # A deleted key's partition is forgotten once no part holds the key: a table of
        # short-lived keys (the command tracker's) must not grow the map without end.
        parts = self.app.parts.values()
        for k in deleted:
            if not any(part.holds(k) for part in parts):
                kp.pop(k, None)
        return out

    def holds(self, key: str) -> bool:
        return key in self._data or key in self._changed

    def load(self, partition: int, keys: Mapping[str, Any]) -> None:
        self._data.update({k: v for k, v in keys.items() if v is not None})

    def drop(self, partitions: set[int], keys: set[str]) -> None:
        for k in keys:
            self._data.pop(k, None)


@dataclass
class App:
    """A named set of agents and their state; its name names its changelog topic.

    ``device_group`` maps a command's device (the key it was sent for) to the group its
    latency is counted under in ``bayou_agent_command_latency_seconds``; the first
    :data:`MAX_DEVICE_GROUPS` names it returns are kept, later new ones count as ``other``, so a
    function returning device ids cannot grow the metric without bound. Default: one group,
    ``all``.
    """

    name: str
    device_group: Callable[[str], str] | None = field(default=None, kw_only=True, repr=False)
    agents: list[AgentSpec] = field(default_factory=list, init=False, repr=False)
    parts: dict[tuple[str, str], _Keyed] = field(default_factory=dict, init=False, repr=False)
    _current_partition: int | None = field(default=None, init=False, repr=False)
    _key_partition: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    # The closing watermark of each input partition (kept by agents.runtime.engine.AppEngine).
    _watermarks: dict[int, float] = field(default_factory=dict, init=False, repr=False)
    _current_agent: str | None = field(default=None, init=False, repr=False)
    _alert_log: list[tuple[str, str]] = field(default_factory=list, init=False, repr=False)
    global_tables: list[GlobalTable] = field(default_factory=list, init=False, repr=False)
    timers: list[TimerSpec] = field(default_factory=list, init=False, repr=False)
    _groups: set[str] = field(default_factory=set, init=False, repr=False)
    _group_failed: bool = field(default=False, init=False, repr=False)

    def group_of(self, device: str) -> str:
        """The device group of ``device`` for the metrics (see the class docstring)."""
        if self.device_group is None:
            return "all"
        try:
            group = str(self.device_group(device))
        except Exception:  # a metric label must not stop the worker
            if not self._group_failed:
                self._group_failed = True
                log.exception("app %r: device_group(%r) raised: counted as 'other'", self.name,
                              device)  # fmt: skip
            return "other"
        if group in self._groups:
            return group
        if len(self._groups) >= MAX_DEVICE_GROUPS:
            return "other"
        self._groups.add(group)
        return group

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise AppError(f"app name {self.name!r}: use letters, digits, '_' and '-' only")

    def _add(self, part: _Keyed) -> None:
        if not _NAME.fullmatch(part.name):
            raise AppError(f"name {part.name!r}: use letters, digits, '_' and '-' only")
        if (part.kind, part.name) in self.parts:
            raise AppError(f"app {self.name!r} already has a {type(part).__name__} {part.name!r}")
        self.parts[(part.kind, part.name)] = part

    def reset(self) -> None:
        """Forget all state (a runtime or :func:`agents.testing.run_app` starts from here)."""
        for part in self.parts.values():
            part.reset()
        self._key_partition.clear()
        self._watermarks.clear()
        self._alert_log.clear()

    def agent(
        self,
        mqtt_pattern: str,
        *,
        model: type[BaseModel] | None = None,
        event_time: str | None = None,
        kafka_topic: str | None = None,
        name: str | None = None,
    ) -> Callable[[AgentFn], AgentFn]:
        """Decorator: run ``fn(payload, ctx)`` for each record of ``mqtt_pattern``.

        ``model`` validates the payload (JSON); without it ``fn`` gets the raw bytes.
        ``event_time`` names the model's field holding epoch seconds.
        """
        pattern = Pattern(mqtt_pattern)
        if event_time is not None and (model is None or event_time not in model.model_fields):
            raise AppError(f"event_time={event_time!r} is not a field of the model")

        def register(fn: AgentFn) -> AgentFn:
            agent_name: str = name or getattr(fn, "__name__", None) or "agent"
            if any(a.name == agent_name for a in self.agents):
                raise AppError(f"app {self.name!r} already has an agent {agent_name!r}")
            self.agents.append(
                AgentSpec(agent_name, pattern, fn, model, event_time, kafka_topic,
                          source=f"{self.name}.{agent_name}")
            )  # fmt: skip
            return fn

        return register

    def timer(self, interval: float, *, name: str | None = None) -> Callable[[TimerFn], TimerFn]:
        """Decorator: ``fn(now, out)`` runs every ``interval`` seconds (wall clock, epoch
        seconds ``now``) on every worker of the app, between batches; it sees the state of the
        worker's partitions (Faust's ``app.timer``). Its outputs are the app's; in
        :func:`agents.testing.run_app` it runs once, at ``advance_to``."""
        if not (isinstance(interval, int | float) and 0 < interval < math.inf):
            raise AppError(f"timer interval {interval!r}: give a number of seconds > 0")

        def register(fn: TimerFn) -> TimerFn:
            timer_name: str = name or getattr(fn, "__name__", None) or "timer"
            if any(t.name == timer_name for t in self.timers):
                raise AppError(f"app {self.name!r} already has a timer {timer_name!r}")
            self.timers.append(TimerSpec(timer_name, float(interval), fn))
            return fn

        return register

    def window(self, name: str, spec: WindowSpec, reducers: Mapping[str, ReducerLike]) -> Window:
        """A windowed aggregation per key, kept in the app's state."""
        w = Window(self, name, spec, reducers)
        self._add(w)
        return w

    def alerter(self, *rules: AlertRule, name: str | None = None) -> AlertHandle:
        """Alert rules applied per key (name default: the rule names joined by '-')."""
        if not rules:
            raise AppError("give at least one AlertRule")
        a = AlertHandle(self, name or "-".join(r.name for r in rules), list(rules))
        self._add(a)
        return a

    def global_table(self, app: str, table: str) -> GlobalTable:
        """The whole of app ``app``'s table ``table``, read-only, on every worker (also of
        other apps): e.g. the last known state of every device, kept by one app and read by
        others. Followed from that app's changelog: see :mod:`agents.global_tables`."""
        g = GlobalTable(app, table)
        self.global_tables.append(g)
        return g

    def table(self, name: str) -> Table:
        """A per-key table (last value per key), kept in the app's state; other agents of the
        app (or modules that import it) read it with :meth:`Table.get`."""
        t = Table(self, name)
        self._add(t)
        return t


def load_apps(modules: Iterable[str]) -> list[App]:
    """Import ``modules`` and return every :class:`App` defined at their top level.

    The current directory is importable (as with ``python -m``), also from the ``bayou``
    console script.
    """
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    apps: list[App] = []
    for mod_name in modules:
        mod = importlib.import_module(mod_name)
        found = [v for v in vars(mod).values() if isinstance(v, App)]
        if not found:
            raise AppError(f"module {mod_name!r} defines no agents.app.App")
        for a in found:
            if a.name == TRACKER_APP:
                raise AppError(f"app name {a.name!r} is the command tracker's; use another")
            if not a.agents:
                raise AppError(f"app {a.name!r} in module {mod_name!r} has no agents")
        apps += [a for a in found if all(a is not b for b in apps)]
    names = [a.name for a in apps]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AppError(f"two apps are named {dupes}: app names must be unique")
    return apps
