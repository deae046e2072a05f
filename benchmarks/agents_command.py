"""The ``e2e_latency`` benchmark app: ``bayou worker --agents benchmarks.agents_command``.

One agent on ``sensors/{device}/telemetry`` (the demo route's Kafka topic, ``bayou.telemetry``):
for every reading it sends the device a QoS 1 command on ``devices/{device}/commands`` that
echoes the reading's sequence number and send stamp, and adds ``agent_ns``, the worker's
``time.monotonic_ns()`` when the agent ran (CLOCK_MONOTONIC is one clock for every process of
the host), so the harness can split the latency into publish -> agent and agent -> device.
The harness names the app with ``BENCH_AGENT_APP`` (a fresh app per run).
"""

from __future__ import annotations

import os
import time

from pydantic import BaseModel

from agents.app import App, Context
from benchmarks.agent_data import ENV_APP


class Reading(BaseModel):
    """What the latency generator publishes (its padding is ignored)."""

    seq: int
    sent_ns: int


app = App(os.environ.get(ENV_APP, "bench_command"))


@app.agent("sensors/{device}/telemetry", model=Reading)
async def echo(reading: Reading, ctx: Context) -> None:
    ctx.command(
        f"devices/{ctx.params['device']}/commands",
        {"seq": reading.seq, "sent_ns": reading.sent_ns, "agent_ns": time.monotonic_ns()},
    )
