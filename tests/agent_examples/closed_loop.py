"""An app that sends commands expecting a response, and reads their status
(tests/test_agents_commands.py).

A reading above 30 °C sends ``cool`` to ``devices/{device}/commands`` with ``expect_response`` of
the reading's ``timeout`` seconds, and publishes the command's id on ``issued/{device}``. A
publish to ``ask/{command_id}`` is answered on ``answers/{command_id}`` with that command's
entry in the tracker's table (``{}`` when it has none): the table other agents read.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from agents import App, Context, command_statuses
from ingress.contract import DEFAULT_TOPIC

app = App("closed_loop")
statuses = command_statuses(app)


class Reading(BaseModel):
    temperature: float
    timeout: float = 5.0


@app.agent("sensors/{device}/telemetry", model=Reading)
async def on_reading(r: Reading, ctx: Context) -> None:
    if r.temperature > 30:
        cid = ctx.command(
            f"devices/{ctx.key}/commands", {"command": "cool"}, expect_response=r.timeout
        )
        ctx.publish(f"issued/{ctx.key}", {"command_id": cid}, qos=1)


@app.agent("ask/{command_id}", kafka_topic=DEFAULT_TOPIC)
async def ask(_raw: Any, ctx: Context) -> None:
    cid = ctx.params["command_id"]
    ctx.publish(f"answers/{cid}", statuses.get(cid, {}), qos=1)
