"""An app with every trigger: an echo per reading, a command when a device runs hot, a webhook
per reading (to ``$HOOKS_TEST_URL/<route>``), and minute windows. Used by the webhook worker
test and the replay test."""

from __future__ import annotations

import os

from pydantic import BaseModel

from agents import AlertRule, App, Context, Count, Out, Threshold, Tumbling, WindowResult


class Reading(BaseModel):
    temperature: float
    ts: float
    n: int = 0
    route: str = "ok"


app = App("hooks")
hot = app.alerter(AlertRule("hot", Threshold(above=30)))
stats = app.window("temp", Tumbling(60), {"n": Count()})


@app.agent("sensors/{device}/telemetry", model=Reading, event_time="ts")
async def on_reading(r: Reading, ctx: Context) -> None:
    stats.add(ctx.key, ctx.ts, r.temperature)
    ctx.publish(f"echo/{ctx.key}", {"n": r.n})
    for ev in hot.observe(ctx.key, ctx.ts, r.temperature):
        if ev.kind == "fired":
            ctx.command(f"devices/{ctx.key}/commands", {"command": "cool"})
    if r.route != "none":
        base = os.environ.get("HOOKS_TEST_URL", "http://127.0.0.1:9")
        body = {"device": ctx.key, "n": r.n, "temperature": r.temperature}
        ctx.webhook(f"{base}/{r.route}", json=body, headers={"X-Test": "yes"})


@stats.on_close
def closed(result: WindowResult, out: Out) -> None:
    out.publish(f"stats/{result.key}", result.as_dict())
