"""A counting app for the failover tests: per device, the readings of each 10 s window of event
time (count, and the sum of the round numbers they carry, so a reading counted twice and one
lost cannot cancel out). Each closed window is published to ``sensors/<device>/stats``."""

from __future__ import annotations

from pydantic import BaseModel

from agents import App, Context, Count, Out, Sum, Tumbling, WindowResult

SIZE = 10.0
GRACE = 60.0


class Reading(BaseModel):
    ts: float
    round: int


app = App("failover")
counts = app.window("per_device", Tumbling(SIZE, grace=GRACE), {"n": Count(), "rounds": Sum()})


@app.agent("sensors/{device}/telemetry", model=Reading, event_time="ts")
async def on_reading(r: Reading, ctx: Context) -> None:
    counts.add(ctx.key, ctx.ts, float(r.round))


@counts.on_close
def publish_counts(result: WindowResult, out: Out) -> None:
    out.publish(f"sensors/{result.key}/stats", result.as_dict(), qos=1)
