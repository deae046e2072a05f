"""Exactly-once (``BAYOU_WORKER_PROCESSING_GUARANTEE=exactly_once``), with real workers.

- On the embedded broker: one worker's batches commit their outputs, changelog and input
  offsets in transactions; read with ``isolation.level=read_committed``, every echo (the app
  writes one per reading) and every window result is there exactly once, and the input offsets
  are committed.
- On a real Apache Kafka (the ``apache_kafka`` fixture, tests/apache_kafka.py): two workers
  share the partitions; one is SIGKILLed in the middle of a batch, after the batch's outputs were
  written and while it waits on a slow webhook (its transaction left open), then restarts; every
  echo and window result is there exactly once. With at-least-once the same kill leaves the
  killed batch's outputs in Kafka and they are written again (checked while writing this test:
  264 echoes twice). Not on the embedded broker: Tansu 0.6.0 holds the last stable offset of a
  whole topic at an open transaction, never aborts a dead producer's transaction, and its
  ListOffsets under-reports, so a restore cannot tell where committed data ends (docs/agents.md).

Topics, app and group are fresh per run, so a shared Kafka's older data cannot interfere.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from bayou.embedded import EmbeddedKafka
from bayou.metrics_scrape import metric_value
from ingress.contract import H_INGRESS_TS, H_MQTT_TOPIC, H_RESULT_ID
from kafkaio.admin import ensure_topics
from tests.agent_examples.eos_counts import GRACE, SIZE
from tests.apache_kafka import ApacheKafka
from tests.conftest import Proc, start_worker
from tests.helpers import wait_until
from tests.webhook_server import HookServer

pytestmark = pytest.mark.integration

MODULE = "tests.agent_examples.eos_counts"
SESSION_TIMEOUT_MS = 3000
BASE = 2_000_000.0  # event time of round 0: a window boundary, far in the past
STEP = 2.0
ROUNDS = 50
DEVICES = [f"eos-{i:02d}" for i in range(24)]


@pytest.fixture
def real_kafka(apache_kafka: ApacheKafka) -> str:
    """The real Apache Kafka of the session (tests/apache_kafka.py): transactions, as the
    embedded broker's are not complete. It fails, never skips, when it cannot start."""
    return apache_kafka.bootstrap()


def names() -> tuple[dict[str, str], str, str, str, str]:
    """A fresh app, input, echo and outbound topic: the workers' environment and the names."""
    run = uuid.uuid4().hex[:8]
    app, topic, echo, outbound = f"eos_{run}", f"eos.in.{run}", f"eos.echo.{run}", f"eos.out.{run}"
    env = {
        "BAYOU_WORKER_PROCESSING_GUARANTEE": "exactly_once",
        "BAYOU_WORKER_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "BAYOU_OUTBOUND_TOPIC": outbound,
        "EOS_TEST_APP": app,
        "EOS_TEST_TOPIC": topic,
        "EOS_TEST_ECHO": echo,
    }
    return env, app, topic, echo, outbound


def check_exactly_once(bootstrap: str, echo: str, outbound: str) -> None:
    """Every reading's echo and every window result, each once, read_committed."""
    records = read_all(bootstrap, [echo, outbound], "read_committed")
    echoes = Counter(
        (d["device"], d["round"]) for t, v, _ in records if t == echo for d in [json.loads(v)]
    )
    want_echoes = {(d, r) for d in DEVICES for r in range(ROUNDS + 1)}
    assert set(echoes) == want_echoes, sorted(want_echoes - set(echoes))[:5]
    twice = {k: n for k, n in echoes.items() if n > 1}
    assert not twice, f"{len(twice)} echoes written more than once, e.g. {list(twice)[:5]}"

    per_window = int(SIZE / STEP)
    stats = Counter(h[H_RESULT_ID].decode() for t, _, h in records if t == outbound)
    results = {json.loads(v)["id"]: json.loads(v) for t, v, _ in records if t == outbound}
    want_ids = {
        f"{d}|{BASE + SIZE * w!r}|{BASE + SIZE * (w + 1)!r}"
        for d in DEVICES
        for w in range(int(ROUNDS * STEP / SIZE))
    }
    assert want_ids <= set(stats), sorted(want_ids - set(stats))[:5]
    assert all(stats[i] == 1 for i in want_ids), [i for i in want_ids if stats[i] > 1][:5]
    for i in want_ids:
        assert results[i]["count"] == per_window, results[i]


def wait_committed(bootstrap: str, app: str, topic: str, ends: dict[int, int]) -> None:
    group = f"bayou-agents.{app}"
    wait_until(
        lambda: all(committed(bootstrap, group, topic).get(p, -1) >= e for p, e in ends.items()),
        60,
        "the workers committed every reading",
    )


def test_batches_commit_outputs_and_offsets_in_transactions(
    fresh_kafka: EmbeddedKafka, tmp_path: Path, procs: list[Proc]
) -> None:
    embedded = fresh_kafka.bootstrap
    env, app, topic, echo, outbound = names()
    w = start_worker(embedded, tmp_path / "w.log", tmp_path / "s", ["--agents", MODULE], **env)
    procs.append(w)
    asyncio.run(ensure_topics(embedded, [echo], 4, 1))
    ends: dict[int, int] = {}
    produce(embedded, topic, range(ROUNDS + 1), ends)  # the last round closes every window
    wait_committed(embedded, app, topic, ends)
    check_exactly_once(embedded, echo, outbound)
    # A read_uncommitted reader sees the same: no batch was aborted.
    plain = read_all(embedded, [echo], "read_uncommitted")
    assert len(plain) == len(DEVICES) * (ROUNDS + 1)


def assigned(p: Proc) -> float:
    return metric_value(p.metrics_port, "bayou_agent_assigned_partitions") or 0.0


def produce(bootstrap: str, topic: str, rounds: range, ends: dict[int, int]) -> None:
    """Readings as the ingress writes them; ``ends``: next offset per partition written."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, "enable.idempotence": True})

    def done(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        part, off = msg.partition(), msg.offset()
        assert part is not None and off is not None
        ends[part] = max(ends.get(part, 0), off + 1)

    now = str(int(time.time() * 1000)).encode()
    for rnd in rounds:
        ts = BASE + STEP * rnd if rnd < ROUNDS else BASE + STEP * ROUNDS + GRACE + 1.0
        for d in DEVICES:
            value = json.dumps({"ts": ts, "round": rnd}).encode()
            headers: list[tuple[str, str | bytes | None]] = [
                (H_MQTT_TOPIC, f"sensors/{d}/telemetry".encode()),
                (H_INGRESS_TS, now),
            ]
            p.produce(topic, value, d.encode(), headers=headers, on_delivery=done)
        p.flush(30)


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(4)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def read_all(
    bootstrap: str, topics: list[str], isolation: str
) -> list[tuple[str, bytes, dict[str, bytes]]]:
    """Every record of ``topics`` (4 partitions each) up to their ends, as (topic, value,
    headers)."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"eos-reader-{uuid.uuid4().hex}",
            "enable.partition.eof": True,
            "isolation.level": isolation,
        }
    )
    out: list[tuple[str, bytes, dict[str, bytes]]] = []
    try:
        c.assign([TopicPartition(t, p, 0) for t in topics for p in range(4)])
        pending = {(t, p) for t in topics for p in range(4)}
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            err = m.error()
            if err is not None:
                assert err.code() == KafkaError._PARTITION_EOF, err
                pending.discard((m.topic(), m.partition()))
                continue
            topic, value, raw = m.topic(), m.value(), m.headers() or []
            assert topic is not None and value is not None and isinstance(raw, list)
            out.append((topic, value, {k: v for k, v in raw if isinstance(v, bytes)}))
        assert not pending, f"not read to the end: {pending}"
    finally:
        c.close()
    return out


def test_sigkill_mid_stream_gives_each_output_exactly_once(
    real_kafka: str, tmp_path: Path, procs: list[Proc]
) -> None:
    bootstrap = real_kafka
    env, app, topic, echo, outbound = names()
    args = ["--agents", MODULE]
    hooks = HookServer().start()
    try:
        env["EOS_TEST_HOOK"] = f"{hooks.url}/slow"
        w1 = start_worker(bootstrap, tmp_path / "w1.log", tmp_path / "s1", args, **env)
        procs.append(w1)
        asyncio.run(ensure_topics(bootstrap, [echo], 4, 1))  # the app's own output topic
        w2 = start_worker(bootstrap, tmp_path / "w2.log", tmp_path / "s2", args, **env)
        procs.append(w2)
        wait_until(
            lambda: assigned(w1) > 0 and assigned(w2) > 0 and assigned(w1) + assigned(w2) == 4,
            30,
            "two workers sharing 4 partitions",
        )
        ends: dict[int, int] = {}
        feeder = threading.Thread(target=produce, args=(bootstrap, topic, range(ROUNDS), ends))
        feeder.start()
        try:
            # The slow endpoint holds w1's batch for 2 s after its outputs were written.
            pid = w1.proc.pid
            wait_until(
                lambda: any(json.loads(c.body)["pid"] == pid for c in hooks.to("/slow")),
                60,
                "the first worker waiting on its webhook",
            )
            w1.proc.send_signal(signal.SIGKILL)
            w1.proc.wait(10)
        finally:
            feeder.join()
        # w1 comes back on the same machine and state dir, so with the same transactional id:
        # starting, it aborts the transaction its killed run left open. (Without a restart,
        # Kafka aborts it after BAYOU_WORKER_TRANSACTION_TIMEOUT_MS; the embedded broker never
        # does: docs/agents.md.)
        w1b = start_worker(bootstrap, tmp_path / "w1b.log", tmp_path / "s1", args, **env)
        procs.append(w1b)
        # Event time moves past the last window's end + grace: every window closes.
        produce(bootstrap, topic, range(ROUNDS, ROUNDS + 1), ends)
        wait_committed(bootstrap, app, topic, ends)
    finally:
        hooks.stop()

    check_exactly_once(bootstrap, echo, outbound)
