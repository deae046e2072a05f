"""The thermostat app of docs/agents.md, with minute windows (the restart test needs a window
that stays open while a worker restarts) and a device-state table."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from agents import AlertRule, App, Context, Count, Max, Mean, Out, Threshold, Tumbling, WindowResult


class Reading(BaseModel):
    temperature: float
    ts: float


app = App("thermostat")
stats = app.window("temp", Tumbling(60, grace=5), {"n": Count(), "mean": Mean(), "max": Max()})
hot = app.alerter(AlertRule("hot", Threshold(above=30), cooldown=60))
last_state = app.table("last_state")


@app.agent("sensors/{device}/telemetry", model=Reading, event_time="ts")
async def on_reading(r: Reading, ctx: Context) -> None:
    stats.add(ctx.key, ctx.ts, r.temperature)
    last_state.put(ctx.key, {"temperature": r.temperature, "ts": r.ts})
    for ev in hot.observe(ctx.key, ctx.ts, r.temperature):
        ctx.publish(f"alerts/{ctx.key}", ev.as_dict(), qos=1)
        if ev.kind == "fired":
            ctx.command(f"devices/{ctx.key}/commands", {"command": "cool"})


@stats.on_close
def publish_stats(result: WindowResult, out: Out) -> None:
    payload: dict[str, Any] = result.as_dict()
    payload["last"] = last_state.get(result.key)
    out.publish(f"sensors/{result.key}/stats", payload, qos=1)
