"""`bayou replay` on a real embedded broker: only inputs from --from on (and before --until),
fresh state, outputs only in the replay topic, nothing to bayou.outbound, dead letters or
webhooks."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from bayou.embedded import EmbeddedKafka
from ingress.contract import H_MQTT_TOPIC, H_RESULT_ID
from tests.conftest import BAYOU, bayou_env, start_kafka
from tests.helpers import headers, read_topic
from tests.webhook_server import HookServer

pytestmark = pytest.mark.integration

DEV = "rp-1"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedKafka]:
    k = start_kafka(tmp_path_factory.mktemp("kafka") / "tansu.log")
    yield k
    k.stop()


async def _produce(bootstrap: str, base: int) -> None:
    """Ten readings a minute apart (Kafka timestamps and event times), the 8th not JSON."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(10):
            ts = base + i * 60 + 1
            value = (
                b"nope"
                if i == 7
                else json.dumps({"temperature": 35.0, "ts": ts, "n": i, "route": "ok"}).encode()
            )
            await producer.send_and_wait(
                "bayou.telemetry", value=value, key=DEV.encode(), timestamp_ms=ts * 1000,
                headers=[(H_MQTT_TOPIC, f"sensors/{DEV}/telemetry".encode())],
            )  # fmt: skip
    finally:
        await producer.stop()


def _replay(bootstrap: str, hook_url: str, *args: str) -> str:
    env = bayou_env(BAYOU_KAFKA_BOOTSTRAP=bootstrap, HOOKS_TEST_URL=hook_url)
    cmd = [*BAYOU, "replay", "--agents", "tests.agent_examples.hooks", *args]
    res = subprocess.run(cmd, env=env, capture_output=True, timeout=90, check=False)
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout.decode()


def _kind(r: object) -> tuple[str, str]:
    h = headers(r)
    return h["bayou.replay.kind"].decode(), h["bayou.replay.topic"].decode()


def test_replay_from_a_time_into_a_replay_topic(broker: EmbeddedKafka) -> None:
    boot = broker.bootstrap
    base = math.floor(time.time() / 60) * 60 - 3600
    asyncio.run(_produce(boot, base))
    start = datetime.fromtimestamp(base + 5 * 60, UTC).isoformat()  # inputs 5..9

    with HookServer() as server:
        out = _replay(boot, server.url, "--from", start)
        assert server.calls == []  # webhooks are recorded, never called
    assert "read 5 record(s) in range" in out and "5 outside the time range skipped" in out
    assert "1 dead letter(s)" in out and "bayou.replay.hooks" in out

    recs = [r for r in read_topic(boot, "bayou.replay.hooks") if r.key == DEV.encode()]
    echoes = [json.loads(r.value)["n"] for r in recs if _kind(r) == ("mqtt", f"echo/{DEV}")]
    assert echoes == [5, 6, 8, 9]  # only inputs from --from on; 7 is a dead letter
    dead = [r for r in recs if _kind(r)[0] == "deadletter"]
    assert [d.value for d in dead] == [b"nope"]
    assert "Invalid JSON" in headers(dead[0])["bayou.error"].decode()
    # Fresh state: the alert fires again at the first replayed input (live it stayed active).
    cmds = [r for r in recs if _kind(r) == ("mqtt", f"devices/{DEV}/commands")]
    assert len(cmds) == 1 and headers(cmds[0])[H_RESULT_ID].decode().endswith(
        "/5#1"
    )  # the echo took the id first
    hooks = [r for r in recs if _kind(r)[0] == "webhook"]
    assert [json.loads(r.value)["n"] for r in hooks] == [5, 6, 8, 9]
    assert {_kind(r)[1] for r in hooks} == {f"{server.url}/ok"}
    # Windows close on event time: [base+300, base+360) ... [base+480, base+540).
    stats = [json.loads(r.value) for r in recs if _kind(r) == ("mqtt", f"stats/{DEV}")]
    assert [(s["start"], s["count"]) for s in stats] == [
        (base + 300.0, 1), (base + 360.0, 1), (base + 480.0, 1),
    ]  # fmt: skip

    # Nothing reached the live topics.
    for topic in ("bayou.outbound", "bayou.deadletter"):
        assert [r for r in read_topic(boot, topic, timeout=3) if r.key == DEV.encode()] == []


def test_replay_until_and_output_topic(broker: EmbeddedKafka) -> None:
    boot = broker.bootstrap
    base = math.floor(time.time() / 60) * 60 - 7200
    asyncio.run(_produce(boot, base))
    with HookServer() as server:
        out = _replay(
            boot, server.url, "--from", str(base + 120), "--until", str(base + 240),
            "--output-topic", "my.replay",
        )  # fmt: skip
        assert server.calls == []
    recs = [r for r in read_topic(boot, "my.replay") if r.key == DEV.encode()]
    echoes = [json.loads(r.value)["n"] for r in recs if _kind(r) == ("mqtt", f"echo/{DEV}")]
    # This test's inputs 2 and 3 only (the first test's records are an hour later).
    assert echoes == [2, 3], out
    stats = [json.loads(r.value) for r in recs if _kind(r) == ("mqtt", f"stats/{DEV}")]
    # [base+120, base+180) closes at input 3; [base+180, base+240) when time moves to --until.
    assert [(s["start"], s["count"]) for s in stats] == [(base + 120.0, 1), (base + 180.0, 1)]


def test_replay_refuses_live_topics_and_bad_times(broker: EmbeddedKafka) -> None:
    env = bayou_env(BAYOU_KAFKA_BOOTSTRAP=broker.bootstrap)
    base = [*BAYOU, "replay", "--agents", "tests.agent_examples.hooks"]
    for args, why in [
        (["--from", "0", "--output-topic", "bayou.outbound"], "live"),
        (["--from", "0", "--output-topic", "bayou.telemetry"], "live"),
        (["--from", "yesterday"], "ISO 8601"),
        (["--from", "100", "--until", "50"], "after --from"),
    ]:
        res = subprocess.run([*base, *args], env=env, capture_output=True, timeout=60, check=False)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert why in res.stderr.decode(), res.stderr.decode()
