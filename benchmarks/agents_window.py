"""The ``agent_window_mean`` benchmark app: ``bayou worker --agents benchmarks.agents_window``.

Per record: validate the payload against :class:`benchmarks.agent_data.Telemetry` and fold the
temperature into the device's 10 s tumbling window (grace 15 s, event time ``ts``); each closed
window's mean is produced to ``BENCH_AGENT_OUTPUT`` as ``WindowResult.as_dict()`` JSON. The
harness names the app and topics with ``BENCH_AGENT_APP``, ``BENCH_AGENT_TOPIC`` and
``BENCH_AGENT_OUTPUT``. The hand-written reference is :mod:`benchmarks.agent_ref` ``window``.
"""

from __future__ import annotations

import os

from agents.app import App, Context, Out
from agents.reducers import Mean
from agents.windowing import Tumbling, WindowResult
from benchmarks.agent_data import (
    DEFAULT_OUTPUT,
    DEFAULT_TOPIC,
    ENV_APP,
    ENV_OUTPUT,
    ENV_TOPIC,
    WINDOW_GRACE,
    WINDOW_SIZE,
    Telemetry,
)

OUTPUT = os.environ.get(ENV_OUTPUT, DEFAULT_OUTPUT)
app = App(os.environ.get(ENV_APP, "bench_window"))
temp = app.window("temp", Tumbling(WINDOW_SIZE, grace=WINDOW_GRACE), {"mean": Mean()})


@app.agent(
    "sensors/{device}/telemetry",
    model=Telemetry,
    event_time="ts",
    kafka_topic=os.environ.get(ENV_TOPIC, DEFAULT_TOPIC),
)
async def window_mean(reading: Telemetry, ctx: Context) -> None:
    temp.add(ctx.key, ctx.ts, reading.temperature)


@temp.on_close
def emit(result: WindowResult, out: Out) -> None:
    out.produce(OUTPUT, result.as_dict())
