"""The ``agent_count`` benchmark app: ``bayou worker --agents benchmarks.agents_count``.

Per record: validate the payload against :class:`benchmarks.agent_data.Telemetry` and add one to
the device's count in the table ``counts`` (RocksDB + the changelog ``bayou.changelog.<app>``).
No output records. The hand-written reference (:mod:`benchmarks.agent_ref`, ``count``) does the
same work. The harness names the app and its input topic with ``BENCH_AGENT_APP`` and
``BENCH_AGENT_TOPIC`` (a fresh app per run: a fresh changelog and state).
"""

from __future__ import annotations

import os

from agents.app import App, Context
from benchmarks.agent_data import DEFAULT_TOPIC, ENV_APP, ENV_TOPIC, Telemetry

app = App(os.environ.get(ENV_APP, "bench_count"))
counts = app.table("counts")


@app.agent(
    "sensors/{device}/telemetry",
    model=Telemetry,
    kafka_topic=os.environ.get(ENV_TOPIC, DEFAULT_TOPIC),
)
async def count(reading: Telemetry, ctx: Context) -> None:
    counts.put(ctx.key, counts.get(ctx.key, 0) + 1)
