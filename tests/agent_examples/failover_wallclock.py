"""A counting app with event time = the device's clock and a short grace, as in docs/agents.md
(``Tumbling(10, grace=2)``): windows close by the wall clock about ``grace`` seconds after
their end. The failover test kills one of two workers with it."""

from __future__ import annotations

from pydantic import BaseModel

from agents import App, Context, Count, Out, Tumbling, WindowResult

SIZE = 5.0
GRACE = 2.0


class Reading(BaseModel):
    ts: float


app = App("failover_wall")
counts = app.window("per_device", Tumbling(SIZE, grace=GRACE), {"n": Count()})


@app.agent("sensors/{device}/telemetry", model=Reading, event_time="ts")
async def on_reading(r: Reading, ctx: Context) -> None:
    counts.add(ctx.key, ctx.ts, 1.0)


@counts.on_close
def publish_counts(result: WindowResult, out: Out) -> None:
    out.publish(f"sensors/{result.key}/stats", result.as_dict(), qos=1)
