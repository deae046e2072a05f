"""The agent worker (the demo app) end to end on a real embedded Kafka (Tansu): one worker,
started in this process, for the module.

Each test uses its own devices and its own event-time range, further ahead than the previous
test's, so a partition's watermark (one per input partition, shared by the devices on it) never
makes a later test's readings late.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from prometheus_client import REGISTRY

from agents.runtime.config import WorkerConfig
from agents.runtime.worker import run_worker
from bayou.embedded import EmbeddedKafka
from ingress.contract import (
    H_DEADLETTER_AGENT,
    H_DEADLETTER_REASON,
    H_DEADLETTER_SOURCE_OFFSET,
    H_DEADLETTER_SOURCE_TOPIC,
    H_INGRESS_TS,
    H_MQTT_QOS,
    H_MQTT_TOPIC,
    H_RESULT_ID,
)
from ingress.contract.commands import is_command_id
from kafkaio.admin import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

TELEMETRY = "bayou.telemetry"
OUTBOUND = "bayou.outbound"
DEADLETTER = "bayou.deadletter"
CHANGELOG = "bayou.changelog.demo"
AGENT = "demo.telemetry"  # <app>.<agent>: dead letters' bayou.agent header and metric label

# Event-time ranges: each call gives a window start 1000 s after the previous one.
_BASES = itertools.count(math.floor(time.time() / 10) * 10 + 1000, 1000)


@dataclass
class Harness:
    bootstrap: str
    producer: AIOKafkaProducer
    state_dir: Path

    async def send(self, device: str | None, value: bytes, topic_device: str | None = None) -> None:
        dev = topic_device or device
        headers = [
            (H_MQTT_TOPIC, f"sensors/{dev}/telemetry".encode()),
            (H_MQTT_QOS, b"1"),
            (H_INGRESS_TS, str(int(time.time() * 1000)).encode()),
        ]
        key = device.encode() if device is not None else None
        await self.producer.send_and_wait(TELEMETRY, value=value, key=key, headers=headers)

    async def reading(self, device: str, temperature: float, ts: float) -> None:
        body = {"temperature": temperature, "humidity": 40.0, "ts": ts}
        await self.send(device, json.dumps(body).encode())


@pytest.fixture(scope="module")
def kafka() -> Iterator[str]:
    broker = EmbeddedKafka()
    boot = broker.start()
    try:
        yield boot
    finally:
        broker.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def harness(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    await ensure_topics(kafka, [TELEMETRY], 2, 1)
    await ensure_topics(kafka, [CHANGELOG], 2, 1, frozenset([CHANGELOG]))
    await ensure_topics(kafka, [OUTBOUND, DEADLETTER], 1, 1)
    state_dir: Path = tmp_path_factory.mktemp("agent-state")
    config = WorkerConfig(
        kafka_bootstrap=kafka,
        metrics_port=None,
        state_dir=state_dir,
        threshold=30.0,
        window_seconds=10.0,
        grace_seconds=2.0,
        alert_cooldown_seconds=60.0,
        # The tests' event times run far ahead of the wall clock (see _BASES).
        max_clock_skew_seconds=1e9,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(config, stop))
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all")
    await producer.start()
    try:
        deadline = time.monotonic() + 60
        while REGISTRY.get_sample_value("bayou_agent_ready") != 1.0:
            if task.done():
                task.result()  # raise the worker's error
            assert time.monotonic() < deadline, "worker never got its partitions"
            await asyncio.sleep(0.1)
        yield Harness(kafka, producer, state_dir)
    finally:
        await producer.stop()
        stop.set()
        await asyncio.wait_for(task, 30)
    assert REGISTRY.get_sample_value("bayou_agent_ready") == 0.0


async def collect(
    bootstrap: str, topic: str, want: int, key: bytes, wait: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Records of ``topic`` with ``key``, read from the start until ``want`` arrived."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    got: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + wait
        while len(got) < want and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for recs in batches.values():
                got += [r for r in recs if r.key == key]
    finally:
        await consumer.stop()
    return got


def by_topic(records: list[ConsumerRecord[bytes, bytes]]) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {}
    for r in records:
        hdrs = dict(r.headers)
        assert hdrs[H_MQTT_QOS] == b"1"
        assert r.value is not None
        out.setdefault(hdrs[H_MQTT_TOPIC].decode(), []).append(json.loads(r.value))
    return out


async def test_hot_reading_alerts_and_commands_once_per_cooldown(harness: Harness) -> None:
    base = next(_BASES)
    before = time.time()
    await harness.reading("hot-1", 35.5, base + 1)
    await harness.reading("hot-1", 36.0, base + 5)  # within the cooldown: no second alert
    await harness.reading("hot-1", 20.0, base + 12)  # closes the window: proves all were read
    # Stats come after the second hot reading was handled, so a wrong second alert would be
    # in Kafka by then; ask for one record more than expected and give it a second to appear.
    records = await collect(harness.bootstrap, OUTBOUND, 4, b"hot-1", wait=8.0)
    topics = by_topic(records)
    assert sorted(topics) == ["alerts/hot-1", "devices/hot-1/commands", "sensors/hot-1/stats"]
    assert topics["alerts/hot-1"] == [
        {"device": "hot-1", "temperature": 35.5, "threshold": 30.0, "ts": base + 1}
    ]
    (command,) = topics["devices/hot-1/commands"]
    issued_at = command.pop("issued_at")
    assert is_command_id(str(command.pop("command_id")))  # the demo's commands expect answers
    assert command == {"command": "cool", "device": "hot-1", "reason": "temperature"}
    assert isinstance(issued_at, float) and before - 1 <= issued_at <= time.time() + 1
    # Alerts and commands carry the input's ingress timestamp for end-to-end latency.
    alert_rec = next(r for r in records if dict(r.headers)[H_MQTT_TOPIC] == b"alerts/hot-1")
    assert int(dict(alert_rec.headers)[H_INGRESS_TS]) > 0
    assert dict(alert_rec.headers)[H_RESULT_ID] == f"hot|hot-1|{base + 1.0!r}|fired".encode()
    stats_rec = next(r for r in records if dict(r.headers)[H_MQTT_TOPIC] == b"sensors/hot-1/stats")
    assert H_INGRESS_TS not in dict(stats_rec.headers)


async def test_window_stats_published_when_watermark_passes_end_plus_grace(
    harness: Harness,
) -> None:
    base = next(_BASES)
    for ts, temp in [(base + 0.5, 21.0), (base + 4, 25.0), (base + 9.5, 23.0)]:
        await harness.reading("win-1", temp, ts)
    await harness.reading("win-1", 22.0, base + 12.5)  # end 10 + grace 2 passed
    records = await collect(harness.bootstrap, OUTBOUND, 1, b"win-1")
    assert len(records) == 1
    (stats,) = by_topic(records)["sensors/win-1/stats"]
    assert stats == {
        "device": "win-1",
        "window_start": base,
        "window_end": base + 10,
        "count": 3,
        "mean": pytest.approx(23.0),
        "min": 21.0,
        "max": 25.0,
    }
    windows = {"app": "demo", "agent": "temperature"}
    assert REGISTRY.get_sample_value("bayou_agent_window_results_total", windows) >= 1  # type: ignore[operator]
    # The demo's state is the App runtime's: RocksDB under apps/demo and its changelog topic.
    assert (harness.state_dir / "apps" / "demo").is_dir()
    changelog = await collect(harness.bootstrap, CHANGELOG, 1, b'["w","temperature","win-1"]')
    assert changelog, "the open window of win-1 went to the changelog"


# Both bad payloads below fail the demo's model: not JSON, then a string temperature.
INVALID = {"app": "demo", "agent": "telemetry", "reason": "invalid"}


async def test_invalid_payload_is_dead_lettered_and_the_worker_keeps_going(
    harness: Harness,
) -> None:
    base = next(_BASES)
    dead_before = REGISTRY.get_sample_value("bayou_agent_dead_letters_total", INVALID)
    await harness.send("bad-1", b"not json {")
    await harness.send("bad-1", b'{"temperature": "hot", "humidity": 1.0, "ts": 1.0}')
    await harness.reading("bad-1", 40.0, base + 1)
    dead = await collect(harness.bootstrap, DEADLETTER, 2, b"bad-1")
    assert [r.value for r in dead] == [
        b"not json {",
        b'{"temperature": "hot", "humidity": 1.0, "ts": 1.0}',
    ]
    for r in dead:
        hdrs = dict(r.headers)
        assert hdrs[H_MQTT_TOPIC] == b"sensors/bad-1/telemetry"
        assert hdrs[H_DEADLETTER_REASON] and b"\n" not in hdrs[H_DEADLETTER_REASON]
        assert hdrs[H_DEADLETTER_SOURCE_TOPIC] == TELEMETRY.encode()
        assert int(hdrs[H_DEADLETTER_SOURCE_OFFSET]) >= 0
        assert hdrs[H_DEADLETTER_AGENT] == AGENT.encode()
    assert b"temperature" in dict(dead[1].headers)[H_DEADLETTER_REASON]
    # The valid reading after the bad ones was processed.
    out = by_topic(await collect(harness.bootstrap, OUTBOUND, 2, b"bad-1"))
    assert len(out["alerts/bad-1"]) == 1
    assert len(out["devices/bad-1/commands"]) == 1
    dead_after = REGISTRY.get_sample_value("bayou_agent_dead_letters_total", INVALID)
    assert dead_after is not None and dead_after - (dead_before or 0.0) >= 2
