"""An app that reads another app's table: the thermostat's ``last_state`` of every device, as a
global table. Asked on ``ask/{device}`` (Kafka topic ``test.asks``), it answers on the Kafka topic
``test.answers`` with what it knows of the device."""

from __future__ import annotations

from agents import App, Context

app = App("state_reader")
states = app.global_table("thermostat", "last_state")


@app.agent("ask/{device}", kafka_topic="test.asks")
async def answer(_payload: bytes, ctx: Context) -> None:
    device = ctx.params["device"]
    ctx.produce("test.answers", {"device": device, "state": states.get(device)})
