"""Run an app over payloads without Kafka: pure, fast, for a data team's unit tests.

::

    outputs = run_app(app, [("sensors/dev-1/telemetry", {"temperature": 31.0, "ts": 5.0})],
                      advance_to=100.0)

Each input is ``(mqtt_topic, payload)`` (a dict is sent as JSON, bytes as they are), or
``(mqtt_topic, payload, key)`` to give the record key; without a key, the key is the first named
level of the agent's pattern (the device in ``sensors/{device}/telemetry``, as the demo route
does), else the MQTT topic. Inputs go to every agent of the app whose pattern matches. Inputs
count as one batch each, all in one input partition: windows close after each input at the
watermark (the highest event time so far, no wall clock), and at the end at ``advance_to`` when
given (``math.inf`` flushes every window). The app's state is reset first. Dead letters come
back as outputs of kind ``"deadletter"``; the result id of an input is ``run_app/0/<index>``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

from agents.app import App, Output
from agents.runtime.engine import AppEngine, record
from ingress.contract import H_MQTT_TOPIC

TOPIC = "run_app"

Input = tuple[str, Mapping[str, Any] | bytes] | tuple[str, Mapping[str, Any] | bytes, str]


GlobalValues = Mapping[tuple[str, str], Mapping[str, Any]]


def run_app(
    app: App,
    inputs: Sequence[Input],
    *,
    advance_to: float | None = None,
    global_tables: GlobalValues | None = None,
) -> list[Output]:
    """The outputs of ``app`` over ``inputs``, in order (see the module docs).

    ``global_tables``: the contents of the app's global tables, by ``(app, table)`` (empty when
    not given). Call it from synchronous code; in async code use :func:`run_app_async`.
    """
    return asyncio.run(
        run_app_async(app, inputs, advance_to=advance_to, global_tables=global_tables)
    )


async def run_app_async(
    app: App,
    inputs: Sequence[Input],
    *,
    advance_to: float | None = None,
    global_tables: GlobalValues | None = None,
) -> list[Output]:
    """:func:`run_app` for async callers."""
    engine = AppEngine(app, lambda _agent: TOPIC)
    for g in app.global_tables:
        g.load((global_tables or {}).get((g.app, g.table), {}))
    out: list[Output] = []
    for i, item in enumerate(inputs):
        mqtt_topic, payload = item[0], item[1]
        key = item[2].encode() if len(item) == 3 else None
        value = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        rec = record(TOPIC, 0, i, key, value, [(H_MQTT_TOPIC, mqtt_topic.encode())])
        out += await engine.process([rec], None)
        out += await engine.advance(None)
        engine.state_changes()
    if advance_to is not None:
        out += await engine.advance(None, advance_to)
    return out
