"""Global tables: one app's table read whole by another app's agents (agents/global_tables.py).

The unit tests feed changelog entries and the test helper; the integration test runs the
thermostat app and a reader app in two real workers (two consumer groups) on the embedded Kafka:
the reader, started after the thermostat wrote its state, answers from it at once (it caught up
before its first record), and follows later updates.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from agents.app import App, Context
from agents.global_tables import GlobalTable
from agents.testing import run_app
from bayou.embedded import EmbeddedKafka
from ingress.contract import H_INGRESS_TS, H_MQTT_TOPIC
from kafkaio.admin import ensure_topics
from tests.agent_examples import state_reader
from tests.conftest import Proc, start_worker
from tests.helpers import wait_until


def test_a_global_table_keeps_its_tables_entries_last_value_wins() -> None:
    g = GlobalTable("thermostat", "last_state")
    g.apply(b'["t","last_state","dev-1"]', b'{"temperature": 20.0}')
    g.apply(b'["t","last_state","dev-2"]', b'{"temperature": 25.0}')
    g.apply(b'["t","last_state","dev-1"]', b'{"temperature": 21.0}')
    g.apply(b'["t","other","dev-3"]', b"1")  # another table of the app
    g.apply(b'["w","temp","dev-4"]', b"{}")  # a window's state
    g.apply(b'["o","bayou.telemetry"]', b"17")  # an input offset
    g.apply(b"not json", b"1")
    assert g.items() == [("dev-1", {"temperature": 21.0}), ("dev-2", {"temperature": 25.0})]
    g.apply(b'["t","last_state","dev-2"]', None)  # deleted
    assert "dev-2" not in g and len(g) == 1 and g.get("dev-2", "gone") == "gone"
    assert g.changelog == "bayou.changelog.thermostat"


def test_run_app_gives_global_tables_the_tests_contents() -> None:
    app = App("reader_unit")
    states = app.global_table("thermostat", "last_state")

    @app.agent("ask/{device}", kafka_topic="asks")
    async def answer(_p: bytes, ctx: Context) -> None:
        ctx.produce("answers", {"state": states.get(ctx.params["device"])})

    known = {("thermostat", "last_state"): {"dev-1": {"temperature": 22.5}}}
    out = run_app(app, [("ask/dev-1", b"?"), ("ask/dev-9", b"?")], global_tables=known)
    assert [o.json() for o in out] == [{"state": {"temperature": 22.5}}, {"state": None}]
    assert run_app(app, [("ask/dev-1", b"?")])[0].json() == {"state": None}


# -- with Kafka ------------------------------------------------------------------------------


def send(bootstrap: str, topic: str, mqtt_topic: str, key: str, value: bytes) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    now = str(int(time.time() * 1000)).encode()
    headers: list[tuple[str, str | bytes | None]] = [
        (H_MQTT_TOPIC, mqtt_topic.encode()),
        (H_INGRESS_TS, now),
    ]
    p.produce(topic, value, key.encode(), headers=headers)
    assert p.flush(10) == 0


class Answers:
    """Reads test.answers from the start."""

    def __init__(self, bootstrap: str) -> None:
        self.c = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"answers-{uuid.uuid4().hex}"}
        )
        self.c.assign([TopicPartition("test.answers", p, 0) for p in range(4)])

    def next(self, timeout: float = 30.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.c.poll(0.5)
            if m is not None and m.error() is None:
                value = m.value()
                assert value is not None
                answer: dict[str, object] = json.loads(value)
                return answer
        raise AssertionError("no answer")

    def close(self) -> None:
        self.c.close()


def reading(temperature: float) -> bytes:
    return json.dumps({"temperature": temperature, "ts": time.time()}).encode()


@pytest.mark.integration
def test_another_apps_worker_reads_the_state_at_start_and_follows_it(
    fresh_kafka: EmbeddedKafka, tmp_path: Path, procs: list[Proc]
) -> None:
    boot = fresh_kafka.bootstrap
    owner = start_worker(
        boot,
        tmp_path / "owner.log",
        tmp_path / "s1",
        ["--agents", "tests.agent_examples.thermostat"],
    )
    procs.append(owner)
    send(boot, "bayou.telemetry", "sensors/dev-1/telemetry", "dev-1", reading(21.5))
    # The owner has written the state: its changelog has dev-1.
    g = GlobalTable("thermostat", "last_state")
    wait_until(lambda: changelog_has(boot, g, "dev-1", 21.5), 30, "the thermostat's changelog")

    reader = start_worker(
        boot, tmp_path / "reader.log", tmp_path / "s2", ["--agents", state_reader.__name__]
    )
    procs.append(reader)
    assert "global tables caught up" in reader.log_text()

    asyncio.run(ensure_topics(boot, ["test.answers"], 4, 1))
    answers = Answers(boot)
    try:
        # Caught up before its first record: the first answer knows dev-1.
        send(boot, "test.asks", "ask/dev-1", "dev-1", b"?")
        first = answers.next()
        state = first["state"]
        assert isinstance(state, dict)
        assert first == {"device": "dev-1", "state": {"temperature": 21.5, "ts": state["ts"]}}

        # An update of the owner reaches the reader (eventually: ask until it shows).
        send(boot, "bayou.telemetry", "sensors/dev-1/telemetry", "dev-1", reading(30.5))

        def updated() -> bool:
            send(boot, "test.asks", "ask/dev-1", "dev-1", b"?")
            state = answers.next()["state"]
            return isinstance(state, dict) and state["temperature"] == 30.5

        wait_until(updated, 30, "the reader seeing the update")
    finally:
        answers.close()


def changelog_has(bootstrap: str, g: GlobalTable, key: str, temperature: float) -> bool:
    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "probe", "enable.partition.eof": True}
    )
    try:
        c.assign([TopicPartition(g.changelog, p, 0) for p in range(4)])
        eof = 0
        deadline = time.monotonic() + 5
        while eof < 4 and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error() is not None:
                eof += 1
                continue
            g.apply(m.key() or b"", m.value())
    finally:
        c.close()
    state = g.get(key)
    return isinstance(state, dict) and state.get("temperature") == temperature
