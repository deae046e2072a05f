"""Agents and MQTT 5 properties: what an agent reads of a request's properties and sets on
what it publishes (agents/mqtt5.py).

- In-process (the engine, no Kafka): ``ctx.properties`` from a record's headers, ``ctx.reply``
  to the response topic with the correlation data, properties on ``publish``/``command`` as
  the record's headers, reserved names refused.
- End to end: an MQTT 5 client's request through a real ingress and a real worker on the
  embedded Kafka, answered on its response topic with its correlation data.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from agents import App, Context
from agents.mqtt5 import headers_for, properties_of
from agents.runtime.engine import AppEngine, record
from ingress.contract import H_MQTT_TOPIC
from tests.conftest import Proc
from tests.mqtt5_client import Mqtt5

REQUEST = [
    (H_MQTT_TOPIC, b"sensors/d1/telemetry"),
    ("mqtt.response_topic", b"replies/d1"),
    ("mqtt.correlation_data", b"\x01corr"),
    ("mqtt.content_type", b"text/plain"),
    ("trace", b"t-7"),
    ("bin", b"\xff"),
]


def _run(app: App, headers: list[tuple[str, bytes]]) -> list[Any]:
    engine = AppEngine(app, lambda _agent: "bayou.telemetry")
    rec = record("bayou.telemetry", 0, 0, b"d1", b"{}", headers)
    return asyncio.run(engine.process([rec], None))


def test_properties_reply_and_published_properties() -> None:
    app = App("p5")
    seen: list[Any] = []

    @app.agent("sensors/{device}/telemetry")
    async def on(reading: Any, ctx: Context) -> None:
        seen.append(ctx.properties)
        ctx.reply({"ok": True}, user_properties=[("a", "1"), ("a", "2")])
        ctx.command("devices/d1/commands", {"c": 1}, message_expiry=30, content_type="x/y")

    out = _run(app, REQUEST)
    (p,) = seen
    assert p.response_topic == "replies/d1" and p.correlation_data == b"\x01corr"
    assert p.content_type == "text/plain"
    assert p.user_properties == (("trace", "t-7"),)  # not the binary header, not mqtt.*
    assert p.user_property("trace") == "t-7" and p.user_property("none") is None
    reply, command = out
    assert (reply.topic, reply.qos) == ("replies/d1", 1)
    assert reply.properties == (
        ("mqtt.correlation_data", b"\x01corr"), ("a", b"1"), ("a", b"2"),
    )  # fmt: skip
    assert command.command and dict(command.properties)["mqtt.content_type"] == b"x/y"
    assert int(dict(command.properties)["mqtt.expires_at_ms"]) > 0


def test_a_311_record_has_no_properties_and_reply_needs_a_response_topic() -> None:
    app = App("p311")

    @app.agent("sensors/{device}/telemetry")
    async def on(reading: Any, ctx: Context) -> None:
        assert ctx.properties.user_properties == () and ctx.properties.response_topic is None
        ctx.reply({"x": 1})  # raises: the record goes to the dead letters

    (dead,) = _run(app, [(H_MQTT_TOPIC, b"sensors/d1/telemetry")])
    assert dead.kind == "deadletter" and "no response topic" in dead.reason


def test_reserved_names_and_bad_values_are_refused() -> None:
    for bad in ({"user_properties": {"bayou.result_id": "x"}},
                {"user_properties": [("mqtt.topic", "x")]},
                {"message_expiry": 0}, {"correlation_data": "text"}):  # fmt: skip
        with pytest.raises(ValueError):
            headers_for(**bad)
    assert properties_of([(H_MQTT_TOPIC, b"t")]).user_properties == ()


@pytest.fixture
def reply_worker(agents_worker: Callable[[str], Proc]) -> Proc:
    return agents_worker("tests.agent_examples.mqtt5_reply")


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_an_mqtt5_request_is_answered_by_an_agent(ingress: Proc, reply_worker: Proc) -> None:
    device = f"req-{uuid.uuid4().hex[:8]}"
    reply_topic = f"replies/{device}"
    c = Mqtt5(ingress.mqtt_port, f"c-{device}")
    try:
        c.connect()
        assert c.subscribe(reply_topic) == [1]
        c.publish(
            f"sensors/{device}/telemetry", json.dumps({"temperature": 20.0}), qos=1,
            ResponseTopic=reply_topic, CorrelationData=b"\x00req-1",
            UserProperty=[("trace", "abc")], ContentType="application/json",
        ).wait_for_publish(10)  # fmt: skip
        got = c.expect(timeout=40)
        assert got.topic == reply_topic
        assert got.correlation_data == b"\x00req-1"
        assert ("served-by", "mqtt5_reply") in got.user_properties
        assert ("trace", "abc") in got.user_properties
        assert got.content_type == "application/json"
        assert json.loads(got.payload) == {"device": device, "content_type": "application/json"}
    finally:
        c.close()
