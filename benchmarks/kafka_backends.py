"""The Kafka a benchmark scenario runs on: the embedded broker, or a real Apache Kafka cluster.

``--kafka embedded`` (the default) runs every Bayou scenario on Tansu, memory only, one
process. ``--kafka real`` runs the scenarios of :data:`REAL_KAFKA_SCENARIOS` on a 3-broker
Apache Kafka cluster in KRaft mode (tools/kafka's pinned jars, ``make kafka-deps``), shaped as
production is: replication factor 3 and ``min.insync.replicas=2`` on every topic Bayou makes,
acks=all. ``--kafka both`` runs them on both, one beside the other in the same report (the
Bayou broker on real Kafka is named ``bayou-kafka``; agent and end-to-end entries carry
``"kafka": "real"``).

The cluster is the test suite's (tests/apache_kafka.py): one launcher, so the benchmark measures
the same brokers the Kafka-semantics tests prove. Its CPU is the sum over the three JVMs.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.procfs import process_cpu_s

KAFKA_CHOICES = ("embedded", "real", "both")
# Ingest, fan-out, the counting agent and the end-to-end latency: what DESIGN §9 and issue 11
# ask to see on real Kafka. The others stay on the embedded broker only.
REAL_KAFKA_SCENARIOS = ("qos1_pub_sub", "qos1_puback", "fanout_1000", "agent_count", "e2e_latency")
REAL_BROKERS = 3
REAL_BAYOU = "bayou-kafka"


def kafka_kinds(args: argparse.Namespace, scenario: str) -> list[str]:
    """On which Kafka (``"embedded"``, ``"real"``) ``scenario`` runs, in order."""
    chosen = getattr(args, "kafka", "embedded")
    if scenario not in REAL_KAFKA_SCENARIOS or chosen == "embedded":
        return ["embedded"]
    return ["real"] if chosen == "real" else ["embedded", "real"]


@dataclass
class BenchKafka:
    """A started Kafka: where clients connect, the replication factor topics get, its pids."""

    kind: str
    bootstrap: str
    replication_factor: int
    _stop: Any = field(repr=False)
    _pids: Any = field(repr=False)
    info: dict[str, object] = field(default_factory=dict)

    def pids(self) -> list[int]:
        """The broker processes now running (three JVMs, or Tansu)."""
        return [int(p) for p in self._pids() if p]

    def cpu_s(self) -> float:
        """CPU seconds so far of every broker process."""
        total = 0.0
        for pid in self.pids():
            try:
                total += process_cpu_s(pid)
            except OSError:
                pass  # a broker that just exited counts no more
        return total

    def env(self) -> dict[str, str]:
        """The ``BAYOU_*`` settings an ingress or worker needs on this Kafka."""
        env = {
            "BAYOU_KAFKA_BOOTSTRAP": self.bootstrap,
            "BAYOU_REPLICATION_FACTOR": str(self.replication_factor),
        }
        if self.kind == "embedded":
            # As `bayou up` on it: the embedded broker holds a fetch for its whole wait.
            env["BAYOU_KAFKA_FETCH_WAIT_MS"] = "5"
        return env

    def stop(self) -> None:
        self._stop()


def start_kafka(
    kind: str, workdir: Path, host: str = "127.0.0.1", brokers: int = REAL_BROKERS
) -> BenchKafka:
    """Start the Kafka of ``kind`` with its files under ``workdir`` (real: ``brokers`` nodes,
    replication factor up to 3); raise with its log tail (``RuntimeError``) when it cannot
    start."""
    workdir.mkdir(parents=True, exist_ok=True)
    if kind == "embedded":
        from bayou.embedded import EmbeddedKafka

        tansu = EmbeddedKafka(host)
        bootstrap = tansu.start(log=workdir / "tansu.log")
        return BenchKafka(
            "embedded", bootstrap, 1, tansu.stop, lambda: [tansu.pid], {"broker": "tansu"}
        )
    if kind != "real":
        raise ValueError(f"unknown Kafka kind {kind!r}: one of embedded, real")
    # The test suite's launcher (tests/ is a package; the harness runs from the repository).
    from tests.apache_kafka import ApacheKafka, KafkaStartError

    cluster = ApacheKafka(workdir / "apache-kafka", {}, brokers=brokers, heap="-Xmx512m")
    rf = min(3, brokers)
    try:
        cluster.start(timeout=150)
    except KafkaStartError as exc:
        raise RuntimeError(f"Apache Kafka did not start (run `make kafka-deps`): {exc}") from None
    return BenchKafka(
        "real",
        cluster.bootstrap(),
        rf,
        cluster.stop,
        lambda: [n.proc.pid for n in cluster.nodes if n.proc is not None],
        {
            "broker": "apache-kafka",
            "brokers": brokers,
            "replication_factor": rf,
            "min_insync_replicas": 2 if rf >= 3 else 1,
            "heap": cluster.heap,
        },
    )
