"""A real `bayou worker --agents tests.agent_examples.thermostat` on a real embedded Kafka.

One module broker, two worker starts: the first handles readings and is stopped (SIGTERM) in
the middle of a window; the second starts with an EMPTY state dir and must restore the open
window from the changelog topic, so the window closes with every reading counted, once.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeAlias

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from bayou.embedded import EmbeddedKafka
from bayou.processes import stop_process
from ingress.contract import (
    H_DEADLETTER_AGENT,
    H_DEADLETTER_REASON,
    H_INGRESS_TS,
    H_MQTT_QOS,
    H_MQTT_TOPIC,
    H_RESULT_ID,
)
from tests.conftest import start_kafka, start_worker

pytestmark = pytest.mark.integration

AGENTS = ["--agents", "tests.agent_examples.thermostat"]
Rec: TypeAlias = ConsumerRecord[bytes, bytes]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedKafka]:
    k = start_kafka(tmp_path_factory.mktemp("kafka") / "tansu.log")
    yield k
    k.stop()


async def _send(bootstrap: str, items: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for device, value in items:
            headers = [
                (H_MQTT_TOPIC, f"sensors/{device}/telemetry".encode()),
                (H_MQTT_QOS, b"1"),
                (H_INGRESS_TS, str(int(time.time() * 1000)).encode()),
            ]
            await producer.send_and_wait(
                "bayou.telemetry", value=value, key=device.encode(), headers=headers
            )
    finally:
        await producer.stop()


def send(bootstrap: str, items: list[tuple[str, bytes]]) -> None:
    asyncio.run(_send(bootstrap, items))


def reading(device: str, temperature: float, ts: float) -> tuple[str, bytes]:
    return device, json.dumps({"temperature": temperature, "ts": ts}).encode()


async def _collect(bootstrap: str, topic: str, key: bytes, want: int, wait: float) -> list[Rec]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    got: list[Rec] = []
    try:
        deadline = time.monotonic() + wait
        while len(got) < want and time.monotonic() < deadline:
            for recs in (await consumer.getmany(timeout_ms=200)).values():
                got += [r for r in recs if r.key == key]
    finally:
        await consumer.stop()
    return got


def collect(bootstrap: str, topic: str, key: bytes, want: int, wait: float = 30.0) -> list[Rec]:
    """Records of ``topic`` with ``key`` from the start, until ``want`` arrived (or ``wait``)."""
    return asyncio.run(_collect(bootstrap, topic, key, want, wait))


def hdr(r: Rec, name: str) -> str:
    value: bytes = dict(r.headers)[name]
    return value.decode()


def test_thermostat_worker_outputs_and_restore_after_restart(
    broker: EmbeddedKafka, tmp_path: Path
) -> None:
    boot = broker.bootstrap
    # A minute window 1-2 minutes ahead of the wall clock: it cannot close by the clock while
    # the test runs (the watermark moves 1 s per s from the highest event time).
    w = math.ceil(time.time() / 60) * 60 + 60.0
    w1 = start_worker(boot, tmp_path / "w1.log", tmp_path / "state1", AGENTS)
    try:
        send(boot, [reading("t-1", 35.0, w + 1), ("t-1", b"nope"), reading("t-1", 25.0, w + 2)])
        out = collect(boot, "bayou.outbound", b"t-1", 3)
        assert [hdr(r, H_MQTT_TOPIC) for r in out] == [
            "alerts/t-1",
            "devices/t-1/commands",
            "alerts/t-1",
        ]
        assert [hdr(r, H_RESULT_ID) for r in out[::2]] == [
            f"hot|t-1|{w + 1!r}|fired",
            f"hot|t-1|{w + 1!r}|resolved",
        ]
        # A command's id names the input record: topic/partition/offset.
        assert re.fullmatch(r"bayou\.telemetry/\d+/0", hdr(out[1], H_RESULT_ID))
        assert json.loads(out[1].value or b"") == {"command": "cool"}
        assert hdr(out[1], H_MQTT_QOS) == "1" and int(hdr(out[1], H_INGRESS_TS)) > 0
        (dead,) = collect(boot, "bayou.deadletter", b"t-1", 1)
        assert dead.value == b"nope" and "Invalid JSON" in hdr(dead, H_DEADLETTER_REASON)
        assert hdr(dead, H_DEADLETTER_AGENT) == "thermostat.on_reading"
    finally:
        stop_process(w1.proc)  # SIGTERM in the middle of the window [w, w + 60)
    assert w1.proc.returncode == 0, w1.log_text()

    w2 = start_worker(boot, tmp_path / "w2.log", tmp_path / "state2", AGENTS)
    try:
        assert "restored partitions" in w2.log_text()
        # 28 joins the restored window; 20 at w + 70 passes end + grace and closes it.
        send(boot, [reading("t-1", 28.0, w + 3), reading("t-1", 20.0, w + 70)])
        out = collect(boot, "bayou.outbound", b"t-1", 4)
        stats = [r for r in out if hdr(r, H_MQTT_TOPIC) == "sensors/t-1/stats"]
        assert len(stats) == 1, [hdr(r, H_MQTT_TOPIC) for r in out]
        assert hdr(stats[0], H_RESULT_ID) == f"t-1|{w!r}|{w + 60!r}"
        body = json.loads(stats[0].value or b"")
        assert body["count"] == 3
        assert body["values"] == {"n": 3, "mean": pytest.approx(88 / 3), "max": 35.0}
        assert body["last"] == {"temperature": 20.0, "ts": w + 70}  # the table was restored
        # Nothing else: no second alert (the alerter's state was restored too).
        time.sleep(1.0)
        assert len(collect(boot, "bayou.outbound", b"t-1", 6, wait=2)) == 4
    finally:
        stop_process(w2.proc)

    # A worker on the FIRST state dir: its RocksDB still holds window [w, w + 60) open; the
    # changelog tail after it (read from the offset RocksDB reached) says it closed and holds
    # the window [w + 60, w + 120) that the second worker opened.
    w3 = start_worker(boot, tmp_path / "w3.log", tmp_path / "state1", AGENTS)
    try:
        send(boot, [reading("t-1", 22.0, w + 125)])
        out = collect(boot, "bayou.outbound", b"t-1", 5)
        time.sleep(1.0)  # and nothing after it: a duplicate result would show below
        out = collect(boot, "bayou.outbound", b"t-1", 6, wait=2)
        stats = [r for r in out if hdr(r, H_MQTT_TOPIC) == "sensors/t-1/stats"]
        assert [hdr(r, H_RESULT_ID) for r in stats] == [
            f"t-1|{w!r}|{w + 60!r}",
            f"t-1|{w + 60!r}|{w + 120!r}",
        ]
        assert json.loads(stats[1].value or b"")["count"] == 1
    finally:
        stop_process(w3.proc)
