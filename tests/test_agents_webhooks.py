"""Webhook triggers (ctx.webhook): returned by run_app, called with retries by the worker, dead
letters after the last try; every call goes to a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from agents.app import App, Context, Output
from agents.runtime.webhooks import H_WEBHOOK_STATUS, H_WEBHOOK_TRIES, H_WEBHOOK_URL, WebhookCaller
from agents.testing import run_app
from bayou.embedded import EmbeddedKafka
from bayou.metrics_scrape import metric_value
from bayou.processes import stop_process
from ingress.contract import (
    H_DEADLETTER_AGENT,
    H_DEADLETTER_REASON,
    H_INGRESS_TS,
    H_MQTT_TOPIC,
    H_RESULT_ID,
)
from tests.agent_examples import hooks
from tests.conftest import start_kafka, start_worker
from tests.helpers import headers, read_topic, wait_until
from tests.webhook_server import HookServer


@pytest.fixture
def server() -> Iterator[HookServer]:
    with HookServer() as s:
        yield s


def test_run_app_returns_webhook_calls_and_calls_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKS_TEST_URL", "http://127.0.0.1:9")  # nothing listens: never called
    outs = run_app(hooks.app, [("sensors/d1/telemetry", {"temperature": 20.0, "ts": 5.0, "n": 7})])
    (echo, call) = outs
    assert echo.kind == "mqtt"
    assert (call.kind, call.topic, call.key, call.agent) == (
        "webhook",
        "http://127.0.0.1:9/ok",
        b"d1",
        "hooks.on_reading",
    )
    assert call.json() == {"device": "d1", "n": 7, "temperature": 20.0}
    assert call.headers == (("X-Test", "yes"),)
    assert call.result_id == "run_app/0/0#1"  # the echo took the input's id first


def test_webhook_arguments_are_checked_and_callbacks_can_call() -> None:
    app = App("wh")
    w = app.table("seen")

    @app.agent("x/{k}", kafka_topic="x")
    async def on_x(payload: bytes, ctx: Context) -> None:
        w.put(ctx.key, 1)
        with pytest.raises(ValueError, match="http"):
            ctx.webhook("ftp://host/x", json={})
        with pytest.raises(ValueError, match="retries"):
            ctx.webhook("http://host/x", json={}, retries=-1)
        ctx.webhook("https://host/x", json={"id": "custom"}, retries=0, timeout=1.5)

    (out,) = run_app(app, [("x/a", b"1")], advance_to=math.inf)
    assert (out.result_id, out.retries, out.timeout) == ("custom", 0, 1.5)


def _out(url: str, rid: str = "r1", **kw: object) -> Output:
    return Output("webhook", url, b'{"a":1}', b"k", result_id=rid, agent="app.agent", **kw)  # type: ignore[arg-type]


async def test_caller_retries_then_succeeds_or_gives_up(server: HookServer) -> None:
    caller = WebhookCaller(retries=2, timeout=5.0, backoff=0.05)
    try:
        flaky, down, bad, once = await caller.call_all(
            [
                _out(server.url + "/flaky"),
                _out(server.url + "/down"),
                _out(server.url + "/bad"),
                _out(server.url + "/down", rid="r2", retries=0),
            ]
        )
    finally:
        await caller.close()
    assert (flaky.ok, flaky.tries, flaky.status) == (True, 3, 200)
    assert (down.ok, down.tries, down.status) == (False, 3, 503)
    assert down.reason == f"webhook POST {server.url}/down failed after 3 tries: HTTP 503"
    assert (bad.ok, bad.tries) == (False, 1)  # a 4xx other than 408/429 is not tried again
    assert (once.ok, once.tries) == (False, 1)  # retries=0 on the call
    calls = server.to("/flaky")
    assert len(calls) == 3 and {c.body for c in calls} == {b'{"a":1}'}
    assert calls[0].headers["Bayou-Result-Id"] == "r1"
    assert calls[0].headers["Content-Type"] == "application/json"
    # Exponential backoff: 0.05 s, then 0.1 s.
    assert calls[1].at - calls[0].at >= 0.045 and calls[2].at - calls[1].at >= 0.095


async def test_caller_times_out_and_reports_connection_errors(server: HookServer) -> None:
    from bayou.net import free_port

    caller = WebhookCaller(retries=1, timeout=5.0, backoff=0.01)
    try:
        t0 = time.monotonic()
        slow, refused = await caller.call_all(
            [
                _out(server.url + "/slow", timeout=0.3),
                _out(f"http://127.0.0.1:{free_port()}/x"),
            ]
        )
        took = time.monotonic() - t0
    finally:
        await caller.close()
    assert (slow.ok, slow.tries, slow.status) == (False, 2, None)
    assert slow.reason.endswith("timed out after 0.3 s")
    assert (refused.ok, refused.tries) == (False, 2) and "Connect" in refused.reason
    assert took < 1.9  # concurrent; each try cut at 0.3 s, not the server's 2 s


# -- a real worker ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedKafka]:
    k = start_kafka(tmp_path_factory.mktemp("kafka") / "tansu.log")
    yield k
    k.stop()


async def _send(bootstrap: str, items: list[tuple[str, dict[str, object]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for device, value in items:
            hdrs = [
                (H_MQTT_TOPIC, f"sensors/{device}/telemetry".encode()),
                (H_INGRESS_TS, str(int(time.time() * 1000)).encode()),
            ]
            await producer.send_and_wait(
                "bayou.telemetry", value=json.dumps(value).encode(), key=device.encode(),
                headers=hdrs,
            )  # fmt: skip
    finally:
        await producer.stop()


def _metric(port: int, name: str) -> float | None:
    return metric_value(
        port, f"bayou_agent_app_{name}_total", {"agent": "on_reading", "app": "hooks"}
    )


@pytest.mark.integration
def test_worker_calls_webhooks_retries_and_dead_letters(
    broker: EmbeddedKafka,
    server: HookServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOOKS_TEST_URL", server.url)  # read by the agent module in the worker
    boot = broker.bootstrap
    w = start_worker(
        boot, tmp_path / "w.log", tmp_path / "state", ["--agents", "tests.agent_examples.hooks"]
    )
    try:
        assert _metric(w.metrics_port, "webhook_calls_ok") == 0.0
        asyncio.run(
            _send(
                boot,
                [
                    ("wh-1", {"temperature": 35.0, "ts": 10.0, "n": 1, "route": "ok"}),
                    ("wh-1", {"temperature": 20.0, "ts": 11.0, "n": 2, "route": "flaky"}),
                    ("wh-2", {"temperature": 20.0, "ts": 12.0, "n": 3, "route": "down"}),
                ],
            )
        )
        wait_until(lambda: len(server.to("/down")) >= 3, 30, "three tries of /down")
        wait_until(lambda: _metric(w.metrics_port, "webhook_calls_failed") == 1.0, 15, "metrics")
        (ok,) = server.to("/ok")
        assert json.loads(ok.body) == {"device": "wh-1", "n": 1, "temperature": 35.0}
        assert ok.headers["X-Test"] == "yes"
        assert ok.headers["Bayou-Result-Id"].startswith("bayou.telemetry/")
        flaky = server.to("/flaky")
        assert len(flaky) == 3 and json.loads(flaky[2].body)["n"] == 2  # failed twice, then ok
        assert len({c.headers["Bayou-Result-Id"] for c in flaky}) == 1

        dead = [r for r in read_topic(boot, "bayou.deadletter") if r.key == b"wh-2"]
        assert len(dead) == 1, dead
        h = headers(dead[0])
        assert json.loads(dead[0].value) == {"device": "wh-2", "n": 3, "temperature": 20.0}
        assert h[H_WEBHOOK_URL] == f"{server.url}/down".encode()
        assert h[H_WEBHOOK_TRIES] == b"3" and h[H_WEBHOOK_STATUS] == b"503"
        assert h[H_DEADLETTER_REASON].decode().endswith("failed after 3 tries: HTTP 503")
        assert h[H_DEADLETTER_AGENT] == b"hooks.on_reading"
        assert h[H_RESULT_ID].decode() == server.to("/down")[0].headers["Bayou-Result-Id"]
        # Nothing of the successful calls went to the dead-letter topic.
        assert not [r for r in read_topic(boot, "bayou.deadletter") if r.key == b"wh-1"]

        m = w.metrics_port
        assert _metric(m, "webhook_calls_ok") == 2.0
        assert _metric(m, "webhook_calls_failed") == 1.0
        assert _metric(m, "webhook_retries") == 4.0  # 2 for /flaky, 2 for /down
        assert _metric(m, "alerts_fired") == 1.0
        assert _metric(m, "alerts_resolved") == 1.0
        assert _metric(m, "commands_sent") == 1.0
        # Windows and alerters have their own label sets.
        hot = {"agent": "hot", "app": "hooks"}
        assert metric_value(m, "bayou_agent_app_alerts_fired_total", hot) == 0.0
    finally:
        stop_process(w.proc)
    assert w.proc.returncode == 0, w.log_text()
