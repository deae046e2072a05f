"""The app of the exactly-once test: per reading, an echo record to a Kafka topic (one output
per input, so a batch processed twice shows); per device, 10 s windows of event time (count and
the sum of the round numbers) published to ``sensors/<device>/stats``; with ``EOS_TEST_HOOK``
set, each closed window also calls that webhook with the worker's PID (the test's slow endpoint
holds the batch open after its outputs were written, and tells the test which worker it is in).

The test names the app, its input topic and the echo topic per run (``EOS_TEST_APP``,
``EOS_TEST_TOPIC``, ``EOS_TEST_ECHO``): a fresh set each time, so a shared Kafka
(the session's real Apache Kafka) holds no older data for them.
"""

from __future__ import annotations

import os

from pydantic import BaseModel

from agents import App, Context, Count, Out, Sum, Tumbling, WindowResult

SIZE = 10.0
GRACE = 60.0
ECHO = os.environ.get("EOS_TEST_ECHO", "eos.echo")
HOOK = os.environ.get("EOS_TEST_HOOK")


class Reading(BaseModel):
    ts: float
    round: int


app = App(os.environ.get("EOS_TEST_APP", "eos"))
counts = app.window("per_device", Tumbling(SIZE, grace=GRACE), {"n": Count(), "rounds": Sum()})


@app.agent(
    "sensors/{device}/telemetry",
    model=Reading,
    event_time="ts",
    kafka_topic=os.environ.get("EOS_TEST_TOPIC", "eos.in"),
)
async def on_reading(r: Reading, ctx: Context) -> None:
    counts.add(ctx.key, ctx.ts, float(r.round))
    ctx.produce(ECHO, {"device": ctx.key, "round": r.round})


@counts.on_close
def publish_counts(result: WindowResult, out: Out) -> None:
    out.publish(f"sensors/{result.key}/stats", result.as_dict(), qos=1)
    if HOOK:
        out.webhook(HOOK, {"pid": os.getpid(), "id": result.id})
