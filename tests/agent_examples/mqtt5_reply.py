"""An app that answers MQTT 5 requests (tests/test_agents_mqtt5.py): a reading with a Response
Topic gets a reply there, with its Correlation Data, its ``trace`` user property echoed and
one of the agent's own."""

from __future__ import annotations

from typing import Any

from agents import App, Context

app = App("mqtt5_reply")


@app.agent("sensors/{device}/telemetry")
async def answer(reading: Any, ctx: Context) -> None:
    p = ctx.properties
    if p.response_topic is None:
        return
    props = {"served-by": "mqtt5_reply"}
    trace = p.user_property("trace")
    if trace is not None:
        props["trace"] = trace
    ctx.reply(
        {"device": ctx.key, "content_type": p.content_type}, user_properties=props,
        content_type="application/json",
    )  # fmt: skip
