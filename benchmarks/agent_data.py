"""Data and pure helpers of the agent benchmarks (``agent_count``, ``agent_window_mean``).

Shared by the harness (:mod:`benchmarks.agent_bench`), the benchmark apps
(:mod:`benchmarks.agents_count`, :mod:`benchmarks.agents_window`) and the hand-written
reference loops (:mod:`benchmarks.agent_ref`), so all of them read the same records with the
same model. No I/O here.

The input is what the ingress writes for the demo telemetry: key = device id, value a JSON
reading padded to ``size`` bytes (100 by default), headers ``mqtt.topic`` =
``sensors/<device>/telemetry`` and ``bayou.ingress_ts`` (epoch milliseconds). Record ``i`` of
``n`` belongs to device ``i % devices`` and has event time ``t0 + span * i / n``, so the event
times rise through the data and cover ``span / window`` windows.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pydantic import BaseModel

# Environment variables naming what the benchmark apps read and write (set by the harness).
ENV_APP = "BENCH_AGENT_APP"
ENV_TOPIC = "BENCH_AGENT_TOPIC"
ENV_OUTPUT = "BENCH_AGENT_OUTPUT"
DEFAULT_TOPIC = "bench.agents.telemetry"
DEFAULT_OUTPUT = "bench.agents.windows"
WINDOW_SIZE = 10.0
WINDOW_GRACE = 15.0


class Telemetry(BaseModel):
    """A telemetry reading as the demo fleet sends it (other fields, e.g. padding, ignored)."""

    temperature: float
    humidity: float
    ts: float


def device_name(i: int) -> str:
    """The id of device ``i``: ``dev-00042``."""
    return f"dev-{i:05d}"


def partition_of(key: str, partitions: int) -> int:
    """The input partition of ``key`` (CRC-32, stable across processes and runs)."""
    return zlib.crc32(key.encode()) % partitions


def payload(device: str, temperature: float, humidity: float, ts: float, size: int = 100) -> bytes:
    """A JSON reading of exactly ``size`` bytes (a ``pad`` field fills it up) when it fits."""
    body = {"device": device, "temperature": temperature, "humidity": humidity, "ts": ts}
    raw = json.dumps(body, separators=(",", ":"))
    fill = size - len(raw) - len(',"pad":""')
    if fill >= 0:
        raw = raw[:-1] + ',"pad":"' + "x" * fill + '"}'
    return raw.encode()


def event_time(i: int, n: int, t0: float, span: float) -> float:
    """Event time of record ``i`` of ``n`` (microseconds: never rounded up into the next
    window)."""
    return round(t0 + span * i / n, 6)


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One record to preload."""

    key: str
    partition: int
    value: bytes
    mqtt_topic: str
    ts: float


def records(
    n: int, devices: int, t0: float, span: float, partitions: int, size: int = 100
) -> Iterator[InputRecord]:
    """The ``n`` input records (module docs), in production order."""
    for i in range(n):
        d = i % devices
        dev = device_name(d)
        ts = event_time(i, n, t0, span)
        temperature = round(20.0 + (d % 10) + (i % 7) * 0.25, 2)
        humidity = round(30.0 + (i % 30), 1)
        yield InputRecord(
            dev,
            partition_of(dev, partitions),
            payload(dev, temperature, humidity, ts, size),
            f"sensors/{dev}/telemetry",
            ts,
        )


def expected_windows(
    n: int, devices: int, t0: float, span: float, size: float = WINDOW_SIZE
) -> int:
    """Distinct (device, tumbling window) pairs of :func:`records`: the window results a
    windowed aggregation per device emits once every window has closed (none late)."""
    from agents.windowing import Tumbling, windows_of  # the runtime's own window bounds

    spec = Tumbling(size)
    seen: set[tuple[int, float]] = set()
    for i in range(n):
        for start, _end in windows_of(spec, event_time(i, n, t0, span)):
            seen.add((i % devices, start))
    return len(seen)


def crossing_time(samples: Sequence[tuple[float, float]], target: float) -> float | None:
    """When a rising counter reached ``target``, interpolated linearly between the two samples
    ``(time, value)`` around it; the first sample's time if it was there already; None if never.
    """
    prev: tuple[float, float] | None = None
    for t, v in samples:
        if v >= target:
            if prev is None or v <= prev[1]:
                return t
            pt, pv = prev
            return pt + (t - pt) * (target - pv) / (v - pv)
        prev = (t, v)
    return None


def rate(count: float, seconds: float | None) -> float | None:
    """``count / seconds`` rounded to 0.1; None without a positive duration."""
    if seconds is None or seconds <= 0:
        return None
    return round(count / seconds, 1)
