"""A consumer-group rebalance with live workers: two real `bayou worker --agents
tests.agent_examples.failover_counts` processes share the 4 partitions of bayou.telemetry while
readings flow; a third worker, with an empty state dir, joins mid-stream (partitions move from
the live workers to it, and their state comes back from the changelog
``bayou.changelog.failover``); later one of the first two is stopped with SIGTERM (the group
rebalances again). Every window result (device x window) must come out with the right count and
sum of rounds and its deterministic id ``key|start|end``; a duplicate must be identical.

The timeline, in rounds of readings (event time ``BASE + 2 * round``, as in
tests/test_agents_failover.py; a window holds 5 rounds and closes 30 rounds after its end):

- rounds 0..29: read by the first two workers alone (committed before the third starts), so
  windows 0..5 of every device are open and counted by them;
- rounds 30..: sent every ``PACE_S`` by a feeder thread while the third worker starts and joins;
  the feeder does not send round 45 before the newcomer has its partitions, so at the hand-over
  no reading past event time 90 exists: windows 4 and 5 (closing at 110 and 120) of the
  newcomer's devices are still open and hold only readings it never read — a restore that lost
  state would lose them or get their counts wrong;
- after round 47 the second worker is stopped (SIGTERM); the feeder does not send round 57
  before the remaining two share the partitions; then the last rounds up to 59, and one flush
  reading per device far ahead closes every window.

The app's grace (60 s of event time) covers the feeder's waits at its two gates (a caught-up idle
partition's watermark moves with the wall clock), unless a gate waits about a minute.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import pytest

from bayou.embedded import EmbeddedKafka
from bayou.metrics_scrape import metric_total
from tests.agent_examples.failover_counts import GRACE
from tests.conftest import Proc
from tests.helpers import wait_until
from tests.test_agents_failover import (
    BASE,
    ROUNDS,
    STEP,
    Producer,
    Run,
    assigned,
    caught_up,
    check_every_result,
    collect_stats,
    expected_results,
    kill,
    reading,
    start_worker,
)

pytestmark = pytest.mark.integration

PRE = 30  # rounds read by the first two workers alone
JOIN_GATE = 45  # round the feeder holds back until the newcomer has its partitions
STOP_AT = 47  # round after which the second worker is stopped
STOP_GATE = 57  # round the feeder holds back until the remaining two share the partitions
PACE_S = 0.4  # wall seconds between two rounds of the feeder


def results(p: Proc) -> float:
    return metric_total(p.metrics_port, "bayou_agent_window_results_total") or 0.0


def restores(p: Proc) -> list[set[int]]:
    """The partitions of each "app failover: restored partitions [...]" line of the log."""
    found = re.findall(r"app failover: restored partitions \[([\d, ]*)\]", p.log_text())
    return [{int(x) for x in s.split(",") if x.strip()} for s in found]


def sharing(*workers: Proc) -> bool:
    """Each of ``workers`` has partitions, the 4 partitions between them."""
    n = [assigned(w) for w in workers]
    return all(x > 0 for x in n) and sum(n) == 4


class Feeder(threading.Thread):
    """Rounds ``PRE..ROUNDS-1`` of readings every ``PACE_S``, holding back a gate round until
    its event is set. Owns the producer while it runs."""

    def __init__(self, producer: Producer, devices: list[str]) -> None:
        super().__init__(daemon=True)
        self.producer = producer
        self.devices = devices
        self.joined = threading.Event()
        self.left = threading.Event()
        self.abort = threading.Event()
        self.sent = PRE  # rounds sent so far
        self.waited: dict[int, float] = {}  # gate round -> wall seconds held back
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for rnd in range(PRE, ROUNDS):
                gate = {JOIN_GATE: self.joined, STOP_GATE: self.left}.get(rnd)
                if gate is not None:
                    t0 = time.monotonic()
                    while not gate.wait(0.1) and not self.abort.is_set():
                        pass
                    self.waited[rnd] = time.monotonic() - t0
                if self.abort.is_set():
                    return
                self.producer.send([reading(d, rnd) for d in self.devices])
                self.sent = rnd + 1
                time.sleep(PACE_S)
        except BaseException as exc:  # re-raised by the test
            self.error = exc

    def finish(self) -> None:
        self.join(60)
        assert not self.is_alive(), "the feeder did not finish"
        if self.error is not None:
            raise self.error


def test_third_worker_joins_and_one_leaves_mid_stream_no_window_result_lost(
    fresh_kafka: EmbeddedKafka, tmp_path: Path, procs: list[Proc]
) -> None:
    boot = fresh_kafka.bootstrap
    devices = [f"rb-{i:02d}" for i in range(40)]
    w1 = start_worker(boot, tmp_path / "w1.log", tmp_path / "state1")
    procs.append(w1)
    w2 = start_worker(boot, tmp_path / "w2.log", tmp_path / "state2")
    procs.append(w2)
    wait_until(lambda: sharing(w1, w2), 30, "two workers sharing 4 partitions")

    producer = Producer(boot)
    feeder = Feeder(producer, devices)
    try:
        for rnd in range(PRE):
            producer.send([reading(d, rnd) for d in devices])
        assert set(producer.partition_of.values()) == {0, 1, 2, 3}
        # Both have read (and committed) their share: windows 0..5 are open in their state.
        wait_until(lambda: caught_up(boot, producer.ends), 30, "w1 and w2 read rounds 0..29")
        assert restores(w1) and restores(w2)

        # A third worker (empty state dir) joins while readings keep coming.
        feeder.start()
        wait_until(lambda: feeder.sent >= PRE + 2, 30, "the feeder sending")
        w3 = start_worker(boot, tmp_path / "w3.log", tmp_path / "state3")
        procs.append(w3)
        wait_until(lambda: sharing(w1, w2, w3), 60, "three workers sharing 4 partitions")
        feeder.joined.set()
        joined_at = feeder.sent
        # Its first assignment, restored from the changelog alone.
        taken = restores(w3)[0]
        assert taken and assigned(w3) > 0, w3.log_text()

        # Readings flow to the three; then w2 stops (SIGTERM) while they still do.
        wait_until(
            lambda: feeder.sent >= STOP_AT and results(w1) > 0 and results(w2) > 0,
            60,
            f"the feeder past round {STOP_AT}, w1 and w2 publishing window results",
        )
        kill(w2, signal.SIGTERM)
        assert w2.proc.returncode == 0, w2.log_text()
        stopped_at = feeder.sent
        wait_until(lambda: sharing(w1, w3), 60, "w1 and w3 sharing 4 partitions")
        feeder.left.set()
        feeder.finish()

        # Every reading read; then event time moves past the last window's end + grace.
        wait_until(lambda: caught_up(boot, producer.ends), 60, "w1 and w3 caught up")
        flush = BASE + STEP * ROUNDS + GRACE + 1.0
        producer.send([reading(d, ROUNDS, ts=flush) for d in devices])
    finally:
        feeder.abort.set()
        feeder.joined.set()
        feeder.left.set()
        if feeder.is_alive():
            feeder.join(60)
        producer.close()

    records = collect_stats(boot, set(expected_results(devices)))
    run = Run(boot, devices, records, w2, w1, set(), producer.partition_of)
    by_id = check_every_result(run)

    # The newcomer took partitions over from the live workers, each with devices whose windows
    # 4 and 5 it could only know from the changelog; they came out right (checked above).
    moved = sorted(d for d in devices if producer.partition_of[d] in taken)
    assert moved
    assert assigned(w3) > 0 and results(w3) > 0, w3.log_text()
    dupes = sum(len(recs) - 1 for recs in by_id.values())
    print(
        f"w3 joined at round {joined_at} and took {sorted(taken)}; w2 stopped at round "
        f"{stopped_at}; feeder held back {feeder.waited}; {dupes} duplicate result(s)"
    )
