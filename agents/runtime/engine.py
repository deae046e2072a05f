"""The Kafka-free engine of an :class:`agents.app.App`: records in, outputs and state out.

Shared by the runtime (:mod:`agents.runtime.loop`) and the test helper (:mod:`agents.testing`),
so a test runs exactly the logic a worker runs.

State entries: a JSON array as text names each entry, with its input partition alongside:

- ``["w", window, key]``, ``["a", alerter, key]``, ``["t", table, key]`` → that key's state
  (``None``: delete);
- ``["o", kafka topic]`` → the next input offset of that partition already folded in;
- ``["m", "watermark"]`` → the partition's closing watermark when the entry was written.

Watermarks are per input partition (as Kafka Streams keeps stream time per partition): a window
(or absence alert) of a key closes at the watermark of the partition the key's records come
from, never because another partition's event time is ahead. A partition's watermark is the
highest event time of its records (capped at ``wall_now + max_clock_skew``), moved on by the
wall clock only while the partition is *idle* (no record in the batch) *and caught up* (the
consumer's position has reached the partition's high watermark): then it is ``max_ts +
(wall_now - the wall time it went idle)``, so a window still closes about ``grace`` seconds
after its end when its devices go quiet. While a partition has a backlog (after a restore, or
catching up) only its records move it. It never goes back, is written with the partition's
state and restored with it. Without a wall clock (tests, replays) it is ``max_ts``.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from typing import Any, Protocol, cast

from confluent_kafka import Message
from pydantic import BaseModel, ValidationError

from agents.app import AgentSpec, AlertHandle, App, Context, Out, Output, Window
from ingress.contract import H_INGRESS_TS, H_MQTT_TOPIC

log = logging.getLogger(__name__)

_WATERMARK = json.dumps(["m", "watermark"])
# What json.dumps does for a str (with its default ensure_ascii), without its Python layers.
_json_str: Callable[[str], str] = encode_basestring_ascii


def entry_key(*parts: str) -> str:
    """The text name of a state entry."""
    return json.dumps(list(parts), separators=(",", ":"))


class Record(Protocol):
    """An input record, read through confluent-kafka ``Message``'s accessors: the worker hands
    the engine the consumer's messages as they are (no copy per record); :func:`record` makes
    one for tests, replays and the test helper."""

    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes]] | None: ...
    def timestamp(self) -> tuple[int, int]: ...


def record(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] = (),
    timestamp_ms: int = 0,
) -> Record:
    """A :class:`Record` (a confluent-kafka ``Message``) with these fields."""
    msg = Message(
        topic=topic, partition=partition, offset=offset, key=key, value=value,
        headers=list(headers), timestamp=(1, timestamp_ms),
    )  # fmt: skip
    return cast(Record, msg)


def _validator(model: type[BaseModel]) -> Callable[[bytes], Any]:
    """``model.model_validate_json`` without its Python layer, when the model is complete."""
    try:
        fn: Callable[[bytes], Any] = model.__pydantic_validator__.validate_json
    except Exception:  # not built yet (forward references): pydantic's path builds it
        return model.model_validate_json
    return fn


def one_line(err: ValidationError) -> str:
    """A validation error as one short line."""
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts).replace("\n", " ")[:500]


async def _call(fn: Callable[..., Any], *args: Any) -> None:
    res = fn(*args)
    if inspect.isawaitable(res):
        await res


@dataclass(slots=True)
class Counts:
    """What happened, for the metrics."""

    records: int = 0
    dead_letters: int = 0
    windows: int = 0
    # Per agent: records it took; per window: results closed. The runtime drains both.
    taken: dict[str, int] = field(default_factory=dict)
    closed: dict[str, int] = field(default_factory=dict)
    # Alert events per (agent or alerter name, "fired" / "resolved"); the runtime drains it.
    alerts: dict[tuple[str, str], int] = field(default_factory=dict)


class AppEngine:
    """Runs one app's agents over records; tracks its state changes per input partition."""

    def __init__(
        self,
        app: App,
        topic_of: Callable[[AgentSpec], str],
        max_clock_skew: float = 300.0,
    ) -> None:
        self.app = app
        app.reset()
        self.max_clock_skew = max_clock_skew
        self.by_topic: dict[str, list[AgentSpec]] = {}
        for a in app.agents:
            self.by_topic.setdefault(topic_of(a), []).append(a)
        self.folded: dict[tuple[str, int], int] = {}
        # Each model's pydantic-core validator, called directly: model_validate_json adds a
        # Python layer per record.
        self._validators: dict[str, Callable[[bytes], Any]] = {}
        for a in app.agents:
            if a.model is not None:
                self._validators[a.name] = _validator(a.model)
        self._pending_offsets: dict[tuple[str, int], int] = {}
        # Per input partition: the watermark before any idle advance, and the wall time the
        # idle advance counts from (absent: no idle advance, the partition has a backlog).
        self._base: dict[int, float] = {}
        self._since: dict[int, float] = {}
        # The closing watermark of each partition (the app's, so new aggregators start there).
        self.close_wm: dict[int, float] = app._watermarks
        self.counts = Counts()

    @property
    def topics(self) -> list[str]:
        """The Kafka topics the app reads."""
        return sorted(self.by_topic)

    def watermark(self, partition: int, wall_now: float | None) -> float:
        """The current watermark of ``partition`` (module docs)."""
        base = self._base.get(partition, -math.inf)
        closed = self.close_wm.get(partition, -math.inf)
        since = self._since.get(partition)
        if wall_now is None or base == -math.inf or since is None:
            return max(base, closed)
        return max(closed, base + max(0.0, wall_now - since))

    def _restart_idle(self, partition: int, since: float | None) -> None:
        """Keep the watermark reached as the base; count the idle advance from ``since`` (None:
        no idle advance)."""
        base = self._base.get(partition, -math.inf)
        closed = self.close_wm.get(partition, -math.inf)
        if closed > base:
            self._base[partition] = closed
        if since is None:
            self._since.pop(partition, None)
        else:
            self._since[partition] = since

    def partitions(self) -> set[int]:
        """The input partitions this engine holds state or time of."""
        out = set(self._base) | set(self.close_wm)
        for part in self.app.parts.values():
            if isinstance(part, Window):
                out.update(part.aggregators)
            elif isinstance(part, AlertHandle):
                out.update(part.alerters)
        return out

    # -- records ---------------------------------------------------------------------------

    async def process(self, records: Iterable[Record], wall_now: float | None) -> list[Output]:
        """Run the agents over ``records`` (already-folded ones are skipped)."""
        out: list[Output] = []
        # Per partition, the highest event time of the batch's processed records: the
        # watermark moves once per partition at the end (module docs), not per record.
        max_ts: dict[int, float] = {}
        by_topic, folded, pending = self.by_topic, self.folded, self._pending_offsets
        app = self.app
        n = 0
        try:
            for rec in records:
                topic = rec.topic()
                agents = by_topic.get(topic)
                if not agents:
                    continue
                p, off = rec.partition(), rec.offset()
                tp = (topic, p)
                if off < folded.get(tp, 0):
                    continue
                pending[tp] = off + 1
                n += 1
                app._current_partition = p
                ts = await self._record(rec, agents, out)
                if ts is not None and ts > max_ts.get(p, -math.inf):
                    max_ts[p] = ts
        finally:
            app._current_partition = None
            app._current_agent = None
            self.counts.records += n
            if app._alert_log:
                self._count_alerts()
        for p, ts in max_ts.items():
            if wall_now is not None:
                ts = min(ts, wall_now + self.max_clock_skew)
                if p in self._since:  # not idle: the idle advance counts again from now
                    self._restart_idle(p, wall_now)
            if ts > self._base.get(p, -math.inf):
                self._base[p] = ts
        return out

    async def _record(
        self, rec: Record, agents: list[AgentSpec], out: list[Output]
    ) -> float | None:
        """Run ``agents`` over one record; its highest event time among the agents that took
        it (None: none did). The hot path of a worker: kept flat on purpose."""
        mqtt_topic = ""
        ingress_ts: int | None = None
        for name, hval in rec.headers() or ():
            if name == H_MQTT_TOPIC:
                mqtt_topic = hval.decode(errors="replace")
            elif name == H_INGRESS_TS:
                try:
                    ingress_ts = int(hval)
                except ValueError:
                    pass
        best: float | None = None
        cause = ""
        taken = self.counts.taken
        value = rec.value()
        raw_key = rec.key()
        for agent in agents:
            params = agent.pattern.match(mqtt_topic) if mqtt_topic else {}
            if params is None:
                continue
            taken[agent.name] = taken.get(agent.name, 0) + 1
            try:
                key = raw_key.decode() if raw_key else next(iter(params.values()), mqtt_topic)
            except UnicodeDecodeError:
                out.append(self._dead(agent, rec, mqtt_topic, "record key is not UTF-8", "bad_key"))
                continue
            if value is None:
                out.append(self._dead(agent, rec, mqtt_topic, "empty record value", "empty_value"))
                continue
            payload: Any = value
            validate = self._validators.get(agent.name)
            if validate is not None:
                try:
                    payload = validate(value)
                except ValidationError as err:
                    out.append(self._dead(agent, rec, mqtt_topic, one_line(err), "invalid"))
                    continue
            if agent.event_time is not None:
                t = getattr(payload, agent.event_time)
                if not isinstance(t, int | float) or not math.isfinite(t):
                    why = f"{agent.event_time}: not a finite number of seconds"
                    out.append(self._dead(agent, rec, mqtt_topic, why, "bad_event_time"))
                    continue
                ts = float(t)
            else:
                ts = (ingress_ts if ingress_ts is not None else rec.timestamp()[1]) / 1000.0
            cause = cause or f"{rec.topic()}/{rec.partition()}/{rec.offset()}"
            mark = len(out)
            ctx = Context(
                out, key=key, ts=ts, mqtt_topic=mqtt_topic, params=params, cause_id=cause,
                ingress_ts_ms=ingress_ts, source=agent.source, headers=rec.headers() or (),
            )  # fmt: skip
            self.app._current_agent = agent.name
            try:
                await agent.fn(payload, ctx)
            except Exception as exc:  # the agent keeps running; its outputs are dropped
                del out[mark:]
                why = f"agent raised {type(exc).__name__}: {exc}".replace("\n", " ")[:500]
                out.append(self._dead(agent, rec, mqtt_topic, why, "agent_error"))
                continue
            if best is None or ts > best:
                best = ts
        return best

    def _count_alerts(self) -> None:
        log_ = self.app._alert_log
        for name, kind in log_:
            self.counts.alerts[(name, kind)] = self.counts.alerts.get((name, kind), 0) + 1
        log_.clear()

    def _dead(
        self, agent: AgentSpec, rec: Record, mqtt_topic: str, reason: str, code: str
    ) -> Output:
        self.counts.dead_letters += 1
        return Output(
            "deadletter", mqtt_topic, rec.value() or b"", rec.key(),
            result_id=f"{rec.topic()}/{rec.partition()}/{rec.offset()}", reason=reason,
            reason_code=code, agent=agent.source,
        )  # fmt: skip

    # -- time ------------------------------------------------------------------------------

    async def advance(
        self,
        wall_now: float | None,
        to: float | None = None,
        backlog: Collection[int] = (),
    ) -> list[Output]:
        """Close windows and tick alerters of each partition at its watermark (or ``to``), run
        their callbacks. ``backlog``: the partitions not caught up (the consumer's position
        behind the high watermark); the wall clock does not move their watermarks."""
        wms: dict[int, float] = {}
        for p in sorted(self.partitions()):
            if wall_now is not None:
                if p in backlog:  # no idle advance (beyond what closed windows) until caught up
                    self._restart_idle(p, None)
                elif p not in self._since:
                    self._restart_idle(p, wall_now)
            wm = self.watermark(p, wall_now)
            if to is not None:
                wm = max(wm, to)
            if wm == -math.inf:
                continue
            if wm > self.close_wm.get(p, -math.inf):
                self.close_wm[p] = wm
            wms[p] = wm
        out: list[Output] = []
        await self._timers(wall_now, to, out)
        if not wms:
            return out
        for part in self.app.parts.values():
            source = f"{self.app.name}.{part.name}"
            if isinstance(part, Window):
                results = [
                    r for p, agg in sorted(part.aggregators.items()) if p in wms
                    for r in agg.close(wms[p])
                ]  # fmt: skip
                if len(wms) > 1:
                    results.sort(key=lambda r: (r.end, r.key, r.start))
                if results:
                    closed = self.counts.closed
                    closed[part.name] = closed.get(part.name, 0) + len(results)
                for r in results:
                    self.counts.windows += 1
                    for close_fn in part.close_callbacks:
                        await self._callback(close_fn, r, r.key, r.id, source, r.as_dict(), out)
            elif isinstance(part, AlertHandle):
                for p, al in sorted(part.alerters.items()):
                    if p not in wms:
                        continue
                    for ev in al.tick(wms[p]):
                        self.app._alert_log.append((part.name, ev.kind))
                        for fn in part.event_callbacks:
                            await self._callback(fn, ev, ev.key, ev.id, source, ev.as_dict(), out)
                self._count_alerts()
        return out

    async def _timers(self, wall_now: float | None, to: float | None, out: list[Output]) -> None:
        """Run the app's timers that are due (module docs of agents.app.App.timer): on the wall
        clock; without one (tests), once at ``to``."""
        now = wall_now if wall_now is not None else to
        if now is None:
            return
        for t in self.app.timers:
            if wall_now is not None and now < t.due:
                continue
            t.due = now + t.interval
            source = f"{self.app.name}.{t.name}"
            rid = f"timer/{t.name}/{now:.3f}"
            await self._callback(t.fn, now, "", rid, source, {"timer": t.name, "now": now}, out)

    async def _callback(
        self, fn: Callable[..., Any], item: Any, key: str, rid: str, source: str,
        as_json: Any, out: list[Output],
    ) -> None:  # fmt: skip
        """Run an ``on_close`` / ``on_event`` callback. One that raises loses its outputs and
        the result goes to the dead letters instead (else the worker would stop, and the same
        window close again after every restart)."""
        mark = len(out)
        try:
            await _call(fn, item, Out(out, key, rid, source=source))
        except Exception as exc:
            del out[mark:]
            name = getattr(fn, "__name__", "callback")
            why = f"{name} raised {type(exc).__name__}: {exc}".replace("\n", " ")[:500]
            self.counts.dead_letters += 1
            payload = json.dumps(as_json, default=str).encode()
            out.append(
                Output("deadletter", "", payload, key.encode(), result_id=rid, reason=why,
                       reason_code="callback_error", agent=source, callback=True)
            )  # fmt: skip

    # -- state -----------------------------------------------------------------------------

    def state_changes(self) -> dict[int, dict[str, Any]]:
        """Entries changed since the last call, per input partition."""
        out: dict[int, dict[str, Any]] = {}
        for (kind, name), part in self.app.parts.items():
            # entry_key(kind, name, key), without a json.dumps call per key.
            prefix = entry_key(kind, name)[:-1] + ","
            for p, keys in part.changes().items():
                entries = out.setdefault(p, {})
                for key, state in keys.items():
                    k = _json_str(key) if type(key) is str else json.dumps(key)
                    entries[f"{prefix}{k}]"] = state
        offsets, self._pending_offsets = self._pending_offsets, {}
        self.folded.update(offsets)
        for (topic, p), off in offsets.items():
            out.setdefault(p, {})[entry_key("o", topic)] = off
        for p, entries in out.items():
            wm = self.close_wm.get(p, -math.inf)
            if wm != -math.inf:
                entries[_WATERMARK] = wm
        return out

    def load(self, partition: int, entries: Mapping[str, Any]) -> None:
        """Add a partition's state entries (from the store or the changelog)."""
        # Restored: no idle advance before the partition has caught up.
        self._since.pop(partition, None)
        per_part: dict[tuple[str, str], dict[str, Any]] = {}
        for ek, value in entries.items():
            parts = json.loads(ek)
            if parts[0] == "o":
                self.folded[(parts[1], partition)] = int(value)
            elif parts[0] == "m":
                wm = float(value)
                if wm > self.close_wm.get(partition, -math.inf):
                    self.close_wm[partition] = wm
                if wm > self._base.get(partition, -math.inf):
                    self._base[partition] = wm
            elif value is not None and (parts[0], parts[1]) in self.app.parts:
                per_part.setdefault((parts[0], parts[1]), {})[parts[2]] = value
                self.app._key_partition[parts[2]] = partition
        for pk, keys in per_part.items():
            self.app.parts[pk].load(partition, keys)
        # Only this partition's windows close at its restored watermark.
        wm = self.close_wm.get(partition, -math.inf)
        for part in self.app.parts.values():
            if isinstance(part, Window) and partition in part.aggregators:
                agg = part.aggregators[partition]
                if wm > agg.watermark:
                    agg.watermark = wm

    def drop(self, partitions: set[int]) -> None:
        """Forget the state of ``partitions`` (revoked); flush before."""
        kp = self.app._key_partition
        keys = {k for k, p in kp.items() if p in partitions}
        for part in self.app.parts.values():
            part.drop(partitions, keys)
        for k in keys:
            del kp[k]
        for tp in [tp for tp in self.folded if tp[1] in partitions]:
            del self.folded[tp]
        for p in partitions:
            self._base.pop(p, None)
            self._since.pop(p, None)
            self.close_wm.pop(p, None)
