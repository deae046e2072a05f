"""Two real `bayou worker --agents tests.agent_examples.failover_counts` processes in one
consumer group on a real embedded Kafka; one is killed (SIGTERM, SIGKILL) while readings flow,
the other takes its partitions over, and every window result (device x window) must come out
with the right count and its deterministic id ``key|start|end``. With an ingress node, a device
subscribed to its stats topic gets each result once, duplicates dropped by result id.

Event times are synthetic (``BASE + 2 * round``, far in the past), so only the readings move the
watermark, apart from its idle advance with the wall clock (agents/runtime/engine.py). The grace of
the app (60 s of event time) covers the readings produced while a dead worker's partitions are
orphaned plus the failover's wall time, so none of them is late: what is measured is the
runtime's state hand-over, not the choice of grace.
"""

from __future__ import annotations

import asyncio
import json
import queue
import re
import signal
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from bayou.embedded import EmbeddedKafka
from bayou.metrics_scrape import metric_total, metric_value
from bayou.processes import stop_process
from ingress.contract import H_INGRESS_TS, H_MQTT_QOS, H_MQTT_TOPIC, H_RESULT_ID
from tests import conftest
from tests.agent_examples.failover_counts import GRACE, SIZE
from tests.conftest import Proc, start_ingress
from tests.helpers import Mqtt, Received, wait_until

pytestmark = pytest.mark.integration

COUNTS = "tests.agent_examples.failover_counts"  # app "failover"
WALL = "tests.agent_examples.failover_wallclock"  # app "failover_wall"
GROUP = "bayou-agents.failover"
TOPIC = "bayou.telemetry"  # the demo route of sensors/{device}/telemetry, 4 partitions
OUTBOUND = "bayou.outbound"
SESSION_TIMEOUT_MS = 3000

BASE = 1_000_000.0  # event time of round 0: a window boundary, far in the past
STEP = 2.0  # event seconds per round: 5 rounds per 10 s window
ROUNDS = 60  # windows 0..11 of every device
KILL_AT = 40  # killed after round 39 (event time 78): window 0 has closed (10 + grace 60 <= 78)
PER_WINDOW = int(SIZE / STEP)
N_WINDOWS = int(ROUNDS * STEP / SIZE)


# -- processes -------------------------------------------------------------------------------


def start_worker(bootstrap: str, log: Path, state_dir: Path, module: str = COUNTS) -> Proc:
    """`bayou worker --agents <module>` with a short session timeout, ready (has partitions)."""
    return conftest.start_worker(
        bootstrap, log, state_dir, ["--agents", module],
        BAYOU_WORKER_SESSION_TIMEOUT_MS=str(SESSION_TIMEOUT_MS),
    )  # fmt: skip


def assigned(p: Proc) -> float:
    return metric_value(p.metrics_port, "bayou_agent_assigned_partitions") or 0.0


def owned_partitions(p: Proc, app: str = "failover") -> set[int]:
    """The partitions the worker last restored (its log says so on every assignment)."""
    found = re.findall(rf"app {app}: restored partitions \[([\d, ]*)\]", p.log_text())
    assert found, p.log_text()
    return {int(x) for x in found[-1].split(",") if x.strip()}


def kill(p: Proc, sig: signal.Signals) -> None:
    if not stop_process(p.proc, 15, sig):
        raise AssertionError(f"worker did not stop on {sig.name}:\n{p.log_text()}")


# -- Kafka -----------------------------------------------------------------------------------


def reading(device: str, rnd: int, ts: float | None = None) -> tuple[str, bytes]:
    ts = BASE + STEP * rnd if ts is None else ts
    return device, json.dumps({"ts": ts, "round": rnd}).encode()


@dataclass
class Producer:
    """Readings as the ingress writes them (key = device, mqtt.topic header), from a loop of
    its own; remembers the next offset of every partition it wrote to."""

    bootstrap: str

    def __post_init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ends: dict[int, int] = {}
        self.partition_of: dict[str, int] = {}
        self.producer = self.loop.run_until_complete(self._start())

    async def _start(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=2)
        await producer.start()
        return producer

    def send(self, items: list[tuple[str, bytes]]) -> None:
        self.loop.run_until_complete(self._send(items))

    async def _send(self, items: list[tuple[str, bytes]]) -> None:
        now = str(int(time.time() * 1000)).encode()
        futs = []
        for device, value in items:
            headers = [
                (H_MQTT_TOPIC, f"sensors/{device}/telemetry".encode()),
                (H_MQTT_QOS, b"1"),
                (H_INGRESS_TS, now),
            ]
            futs.append(
                await self.producer.send(TOPIC, value=value, key=device.encode(), headers=headers)
            )
        metas = await asyncio.gather(*futs)
        for (device, _), m in zip(items, metas, strict=True):
            self.partition_of[device] = m.partition
            self.ends[m.partition] = max(self.ends.get(m.partition, 0), m.offset + 1)

    def close(self) -> None:
        self.loop.run_until_complete(self.producer.stop())
        self.loop.close()


async def _committed(bootstrap: str, partitions: list[int], group: str) -> dict[int, int]:
    # The admin client's OffsetFetch does not decode on Tansu; a consumer of the group that
    # never subscribes (so never joins) reads the committed offsets.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        out = {}
        for p in partitions:
            out[p] = await consumer.committed(TopicPartition(TOPIC, p)) or -1
        return out
    finally:
        await consumer.stop()


def caught_up(bootstrap: str, ends: dict[int, int], group: str = GROUP) -> bool:
    """The group has committed every reading produced (so the survivor has read them all)."""
    committed = asyncio.run(_committed(bootstrap, sorted(ends), group))
    return all(committed.get(p, -1) >= end for p, end in ends.items())


Rec = Any  # aiokafka ConsumerRecord


async def _collect_stats(bootstrap: str, want: set[str], wait: float) -> list[Rec]:
    consumer = AIOKafkaConsumer(
        OUTBOUND, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False, fetch_max_wait_ms=50,
    )  # fmt: skip
    await consumer.start()
    got: list[Rec] = []
    try:
        deadline = time.monotonic() + wait
        quiet_until = None
        while time.monotonic() < deadline:
            recs = [r for rs in (await consumer.getmany(timeout_ms=200)).values() for r in rs]
            got += [r for r in recs if hdr(r, H_MQTT_TOPIC).endswith("/stats")]
            if want <= {hdr(r, H_RESULT_ID) for r in got}:
                # Everything is there: read a little longer for late duplicates.
                quiet_until = quiet_until or time.monotonic() + 1.0
                if time.monotonic() > quiet_until:
                    break
    finally:
        await consumer.stop()
    return got


def collect_stats(bootstrap: str, want: set[str], wait: float = 30.0) -> list[Rec]:
    """The stats records of bayou.outbound, until every id of ``want`` was seen (or ``wait``)."""
    return asyncio.run(_collect_stats(bootstrap, want, wait))


def hdr(r: Rec, name: str) -> str:
    value: bytes = dict(r.headers).get(name, b"")
    return value.decode()


# -- the scenario ----------------------------------------------------------------------------


def is_flush_window(result_id: str) -> bool:
    """The window the flush readings open: only the wall clock closes it (~70 s later)."""
    parts = result_id.split("|")
    return len(parts) == 3 and float(parts[1]) >= BASE + STEP * ROUNDS


def window_id(device: str, w: int) -> str:
    start = BASE + SIZE * w
    return f"{device}|{start!r}|{start + SIZE!r}"


def expected_results(devices: list[str]) -> dict[str, tuple[str, int, float]]:
    """Result id → (device, count, sum of rounds) for every device and window."""
    out = {}
    for d in devices:
        for w in range(N_WINDOWS):
            rounds = range(w * PER_WINDOW, (w + 1) * PER_WINDOW)
            out[window_id(d, w)] = (d, PER_WINDOW, float(sum(rounds)))
    return out


@dataclass
class Run:
    bootstrap: str
    devices: list[str]
    records: list[Rec]
    killed: Proc
    survivor: Proc
    killed_partitions: set[int]
    partition_of: dict[str, int]


def run_failover(
    kafka: EmbeddedKafka, tmp_path: Path, procs: list[Proc], sig: signal.Signals, n: int = 40
) -> Run:
    boot = kafka.bootstrap
    devices = [f"fo-{i:02d}" for i in range(n)]
    w1 = start_worker(boot, tmp_path / "w1.log", tmp_path / "state1")
    procs.append(w1)
    w2 = start_worker(boot, tmp_path / "w2.log", tmp_path / "state2")
    procs.append(w2)
    # The group settles: each worker has some of the 4 partitions.
    wait_until(
        lambda: assigned(w1) > 0 and assigned(w2) > 0 and assigned(w1) + assigned(w2) == 4,
        30,
        "two workers sharing 4 partitions",
    )
    p1, p2 = owned_partitions(w1), owned_partitions(w2)
    assert p1 and p2 and not p1 & p2 and p1 | p2 == {0, 1, 2, 3}, (p1, p2)

    producer = Producer(boot)
    try:
        for rnd in range(KILL_AT):
            producer.send([reading(d, rnd) for d in devices])
        # Both workers are working: each has read its share and closed some windows.
        wait_until(
            lambda: all(
                (metric_total(w.metrics_port, "bayou_agent_window_results_total") or 0) > 0
                for w in (w1, w2)
            ),
            30,
            "both workers publishing window results",
        )
        assert {producer.partition_of[d] for d in devices} == {0, 1, 2, 3}

        # Mid-stream: readings keep coming (from a thread; the main thread leaves the
        # producer alone until it is done) and w1 is killed while it works on them, with its
        # windows 1..7 open.
        started = threading.Event()

        def keep_producing() -> None:
            for rnd in range(KILL_AT, ROUNDS):
                producer.send([reading(d, rnd) for d in devices])
                if rnd == KILL_AT + 2:
                    started.set()

        feeder = threading.Thread(target=keep_producing)
        feeder.start()
        try:
            assert started.wait(30)
            kill(w1, sig)
        finally:
            feeder.join()
        if sig == signal.SIGTERM:
            assert w1.proc.returncode == 0, w1.log_text()

        # The survivor takes every partition over and reads every reading...
        wait_until(lambda: assigned(w2) == 4, 30, "the survivor owning all 4 partitions")
        assert owned_partitions(w2) >= p1, w2.log_text()
        wait_until(lambda: caught_up(boot, producer.ends), 30, "the survivor caught up")
        # ...then event time moves past the last window's end + grace: every window closes.
        flush = BASE + STEP * ROUNDS + GRACE + 1.0
        producer.send([reading(d, ROUNDS, ts=flush) for d in devices])
    finally:
        producer.close()

    want = expected_results(devices)
    records = collect_stats(boot, set(want))
    return Run(boot, devices, records, w1, w2, p1, producer.partition_of)


def check_every_result(run: Run) -> dict[str, list[Rec]]:
    """Every device x window is there with the right count, id and topic; duplicates are
    recognisable (same id) and identical. Returns the records by result id."""
    want = expected_results(run.devices)
    by_id: dict[str, list[Rec]] = defaultdict(list)
    for r in run.records:
        if is_flush_window(hdr(r, H_RESULT_ID)):
            continue
        by_id[hdr(r, H_RESULT_ID)].append(r)
    missing = sorted(set(want) - set(by_id))
    assert not missing, f"{len(missing)} window results lost, e.g. {missing[:5]}"
    assert set(by_id) == set(want), sorted(set(by_id) - set(want))[:5]
    wrong = []
    for rid, recs in by_id.items():
        device, count, rounds = want[rid]
        for r in recs:
            body = json.loads(r.value)
            assert hdr(r, H_MQTT_TOPIC) == f"sensors/{device}/stats"
            assert r.key == device.encode()
            assert body["id"] == rid and body["key"] == device
            if (body["count"], body["values"]) != (count, {"n": count, "rounds": rounds}):
                wrong.append((rid, body["count"], body["values"]["rounds"], count, rounds))
        # A duplicate (the same window published again after the takeover) carries the same
        # id and the same result.
        assert len({r.value for r in recs}) == 1, [json.loads(r.value) for r in recs]
    assert not wrong, f"{len(wrong)} results with wrong counts, e.g. {wrong[:5]}"
    return by_id


# -- tests -----------------------------------------------------------------------------------


def test_sigterm_one_of_two_workers_loses_no_window_result(
    fresh_kafka: EmbeddedKafka, tmp_path: Path, procs: list[Proc]
) -> None:
    run = run_failover(fresh_kafka, tmp_path, procs, signal.SIGTERM)
    check_every_result(run)
    # The devices of the stopped worker's partitions were carried on by the survivor.
    moved = [d for d in run.devices if run.partition_of[d] in run.killed_partitions]
    assert moved


def test_sigkill_one_of_two_workers_loses_no_window_result(
    fresh_kafka: EmbeddedKafka, tmp_path: Path, procs: list[Proc]
) -> None:
    run = run_failover(fresh_kafka, tmp_path, procs, signal.SIGKILL)
    assert run.killed.proc.returncode == -signal.SIGKILL
    by_id = check_every_result(run)
    dupes = {rid: len(recs) for rid, recs in by_id.items() if len(recs) > 1}
    # Only windows of the killed worker's keys can be published twice.
    for rid in dupes:
        assert run.partition_of[rid.split("|")[0]] in run.killed_partitions, dupes


def drain(clients: dict[str, Mqtt], want: int, timeout: float) -> dict[str, list[Received]]:
    """Each client's messages until each has ``want``, then whatever comes in a quiet second
    (the flush window, which only the wall clock could close, left out)."""
    got: dict[str, list[Received]] = {d: [] for d in clients}

    def take() -> None:
        for d, c in clients.items():
            while True:
                try:
                    m = c.messages.get_nowait()
                except queue.Empty:
                    break
                if not is_flush_window(json.loads(m.payload)["id"]):
                    got[d].append(m)

    deadline = time.monotonic() + timeout
    while any(len(v) < want for v in got.values()) and time.monotonic() < deadline:
        take()
        time.sleep(0.05)
    time.sleep(1.0)
    take()
    return got


async def _produce_raw(
    bootstrap: str, items: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, headers in items:
            await producer.send_and_wait(OUTBOUND, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


def test_device_gets_each_window_result_once_across_a_sigkill_failover(
    fresh_kafka: EmbeddedKafka, tmp_path: Path, procs: list[Proc]
) -> None:
    ingress = start_ingress(fresh_kafka.bootstrap, tmp_path / "ingress.log")
    procs.append(ingress)
    devices = [f"fo-{i:02d}" for i in range(40)]
    clients = {d: Mqtt(ingress.mqtt_port, f"dev-{d}").connect() for d in devices}
    try:
        for d, c in clients.items():
            c.subscribe(f"sensors/{d}/stats", qos=1)
        run = run_failover(fresh_kafka, tmp_path, procs, signal.SIGKILL, n=len(devices))
        by_id = check_every_result(run)
        kafka_dupes = sum(len(recs) - 1 for recs in by_id.values())

        # Every device gets each of its window results once, with the right count.
        for d, msgs in drain(clients, N_WINDOWS, 20).items():
            ids = Counter(json.loads(m.payload)["id"] for m in msgs)
            assert ids == Counter(window_id(d, w) for w in range(N_WINDOWS)), (d, ids)
            assert all(m.topic == f"sensors/{d}/stats" and m.qos == 1 for m in msgs)
            assert all(json.loads(m.payload)["count"] == PER_WINDOW for m in msgs)

        # A result produced again after the fact (what a successor re-publishing a window
        # looks like: another record, the same mqtt.topic and bayou.result_id) is dropped; a
        # new result id on the same topic and key (so after it in the same partition) is not.
        again = []
        for d in devices:
            first = by_id[window_id(d, 0)][0]
            again.append((first.key, first.value, list(first.headers)))
            rid = f"sentinel|{d}"
            heads = [
                (H_MQTT_TOPIC, f"sensors/{d}/stats".encode()),
                (H_MQTT_QOS, b"1"),
                (H_RESULT_ID, rid.encode()),
            ]
            again.append((d.encode(), json.dumps({"id": rid}).encode(), heads))
        asyncio.run(_produce_raw(fresh_kafka.bootstrap, again))
        for d, msgs in drain(clients, 1, 20).items():
            assert [json.loads(m.payload)["id"] for m in msgs] == [f"sentinel|{d}"], d
        dropped = metric_value(
            ingress.metrics_port, "bayou_ingress_duplicate_results_dropped_total"
        )
        assert dropped == len(devices) + kafka_dupes
    finally:
        for c in clients.values():
            c.close()


def test_sigkill_with_device_clock_event_time_and_short_grace_loses_no_reading(
    fresh_kafka: EmbeddedKafka, tmp_path: Path, procs: list[Proc]
) -> None:
    """Event time = the devices' clock, grace 2 s (as the docs' first agent): one worker of
    two is SIGKILLed 4.5 s into a 5 s window while readings keep coming; every window of
    every device must count every reading sent in it."""
    from agents.windowing import Tumbling, windows_of
    from tests.agent_examples.failover_wallclock import GRACE as W_GRACE
    from tests.agent_examples.failover_wallclock import SIZE as W_SIZE

    spec = Tumbling(W_SIZE, grace=W_GRACE)
    boot = fresh_kafka.bootstrap
    devices = [f"wc-{i:02d}" for i in range(40)]
    w1 = start_worker(boot, tmp_path / "w1.log", tmp_path / "state1", WALL)
    procs.append(w1)
    w2 = start_worker(boot, tmp_path / "w2.log", tmp_path / "state2", WALL)
    procs.append(w2)
    wait_until(
        lambda: assigned(w1) > 0 and assigned(w2) > 0 and assigned(w1) + assigned(w2) == 4,
        30,
        "two workers sharing 4 partitions",
    )
    killed_partitions = owned_partitions(w1, "failover_wall")

    sent: Counter[str] = Counter()
    producer = Producer(boot)
    try:

        def one_round() -> None:
            ts = time.time()
            producer.send([(d, json.dumps({"ts": ts}).encode()) for d in devices])
            for d in devices:
                for start, end in windows_of(spec, ts):
                    sent[f"{d}|{start!r}|{end!r}"] += 1

        # A whole window with both workers, then SIGKILL 4.5 s into the next one: the
        # survivor cannot take over before the session timeout (3 s), after that window's
        # end + grace (2.5 s after the kill).
        kill_at = (time.time() // W_SIZE + 1) * W_SIZE + 4.5
        while time.time() < kill_at:
            one_round()
            time.sleep(0.2)
        kill(w1, signal.SIGKILL)
        until = time.time() + 6.0
        while time.time() < until:
            one_round()
            time.sleep(0.2)
        wait_until(lambda: assigned(w2) == 4, 30, "the survivor owning all 4 partitions")
        last_end = max(float(rid.split("|")[2]) for rid in sent)
    finally:
        producer.close()

    # The wall clock closes the last window about grace seconds after its end.
    time.sleep(max(0.0, last_end + W_GRACE - time.time()))
    records = collect_stats(boot, set(sent))
    got: dict[str, set[int]] = defaultdict(set)
    for r in records:
        got[hdr(r, H_RESULT_ID)].add(json.loads(r.value)["count"])
    missing = sorted(set(sent) - set(got))
    assert not missing, f"{len(missing)} window results lost, e.g. {missing[:5]}"
    short = sorted((rid, sorted(got[rid]), n) for rid, n in sent.items() if got[rid] != {n})
    on_killed = {rid.split("|")[0] for rid, _, _ in short} & {
        d for d, p in producer.partition_of.items() if p in killed_partitions
    }
    assert not short, (
        f"{len(short)} window results with counts other than the readings sent "
        f"({len(on_killed)} devices of the killed worker), e.g. {short[:5]}"
    )
