"""The ``e2e_latency`` stack: Kafka, ``bayou ingress`` and ``bayou worker``.

Tansu (memory storage) on a free port of 127.0.0.1, or a 3-broker Apache Kafka cluster
(replication factor 3, :mod:`benchmarks.kafka_backends`), then the ingress and the worker with the
``benchmarks.agents_command`` app, each on free ports, with their logs in the run's work
directory; ready when their metrics say so, stopped by process id. The stack also reads what
the scenario measures of it: CPU seconds of its processes and of the whole machine, and the
worker's batch metrics.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from bayou.metrics_scrape import scrape
from bayou.processes import stop_process
from benchmarks.brokers import HOST, BrokerError, find_bayou, log_tail
from benchmarks.kafka_backends import BenchKafka, start_kafka
from benchmarks.procfs import tree_cpu_s

REPO = Path(__file__).resolve().parent.parent
APP_MODULE = "benchmarks.agents_command"
# Worker metrics read around the measured span.
W_RECORDS = "bayou_agent_records_in_total"
W_BATCHES = "bayou_agent_batch_seconds_count"
W_BATCH_S = "bayou_agent_batch_seconds_sum"


def machine_busy_s(stat_text: str, ticks: int) -> float:
    """CPU seconds all cores spent busy (not idle, not iowait), from ``/proc/stat``'s first line."""
    fields = stat_text.splitlines()[0].split()
    if fields[0] != "cpu":
        raise ValueError("not /proc/stat")
    vals = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(vals) - vals[3] - vals[4]) / ticks


def _metrics(port: int, names: list[str]) -> dict[str, float]:
    """The samples ``names`` the endpoint has, each summed over its labels (records are
    counted per agent); none when it does not answer."""
    samples = scrape(port, HOST, timeout=2.0)
    if samples is None:
        return {}
    return {n: v for n in names if (v := samples.total(n)) is not None}


def _bayou_env(**extra: str) -> dict[str, str]:
    """This environment without BAYOU_* settings (a routes file would change the topics)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAYOU_")}
    env["BAYOU_ALLOW_ANONYMOUS"] = "true"  # measured without authentication, as mosquitto is
    env.update(extra)
    return env


class E2EStack:
    """Kafka, ``bayou ingress`` and ``bayou worker --agents benchmarks.agents_command``."""

    def __init__(self, workdir: Path, kafka_kind: str = "embedded", brokers: int = 3) -> None:
        self.workdir = workdir
        self.kafka_kind = kafka_kind
        self.brokers = brokers
        self.kafka: BenchKafka | None = None
        self.ingress: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.mqtt_port = 0
        self.ingress_metrics = 0
        self.worker_metrics = 0
        self.bootstrap = ""
        self.start_s: dict[str, float] = {}

    def start(self) -> None:
        from bayou.net import free_port

        self.workdir.mkdir(parents=True, exist_ok=True)
        binary = find_bayou()
        t = time.monotonic()
        try:
            self.kafka = start_kafka(self.kafka_kind, self.workdir, HOST, self.brokers)
        except RuntimeError as exc:
            raise BrokerError(str(exc)) from None
        self.bootstrap = self.kafka.bootstrap
        self.start_s["kafka"] = round(time.monotonic() - t, 3)
        self.mqtt_port = free_port(HOST)
        self.ingress_metrics = free_port(HOST)
        self.worker_metrics = free_port(HOST)
        common = {**self.kafka.env(), "BAYOU_METRICS_HOST": HOST}
        t = time.monotonic()
        log = self.workdir / "ingress.log"
        with open(log, "wb") as out:
            self.ingress = subprocess.Popen(
                [binary, "ingress"],
                env=_bayou_env(
                    **common,
                    BAYOU_MQTT_HOST=HOST,
                    BAYOU_MQTT_PORT=str(self.mqtt_port),
                    BAYOU_INGRESS_METRICS_PORT=str(self.ingress_metrics),
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_ready(self.ingress, self.ingress_metrics, "bayou_ingress_ready", log, 60.0)
        self.start_s["ingress"] = round(time.monotonic() - t, 3)
        t = time.monotonic()
        log = self.workdir / "worker.log"
        with open(log, "wb") as out:
            self.worker = subprocess.Popen(
                [binary, "worker", "--agents", APP_MODULE],
                cwd=REPO,
                env=_bayou_env(
                    **common,
                    BAYOU_WORKER_METRICS_PORT=str(self.worker_metrics),
                    BAYOU_STATE_DIR=str(self.workdir / "state"),
                    BENCH_AGENT_APP=f"bench_e2e_{os.getpid()}",
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        # Ready = it has its partitions (the group join takes ~5 s on the embedded broker).
        self._wait_ready(self.worker, self.worker_metrics, "bayou_agent_ready", log, 90.0)
        self.start_s["worker"] = round(time.monotonic() - t, 3)

    @staticmethod
    def _wait_ready(
        proc: subprocess.Popen[bytes], port: int, metric: str, log: Path, timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while _metrics(port, [metric]).get(metric) != 1.0:
            if proc.poll() is not None:
                raise BrokerError(
                    f"{log.stem} exited with code {proc.returncode}; log {log}:\n{log_tail(log)}"
                )
            if time.monotonic() > deadline:
                raise BrokerError(f"{metric} not 1 after {timeout:.0f}s; log {log}")
            time.sleep(0.1)

    def check_alive(self) -> None:
        for name, proc in (("ingress", self.ingress), ("worker", self.worker)):
            if proc is None or proc.poll() is not None:
                log = self.workdir / f"{name}.log"
                raise RuntimeError(f"bayou {name} is not running; log {log}:\n{log_tail(log)}")

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of the ingress (and children), the worker, Kafka (every broker
        process) and the whole machine (every core, every process)."""
        assert self.ingress is not None and self.worker is not None and self.kafka is not None
        with open("/proc/stat") as f:
            machine = machine_busy_s(f.read(), os.sysconf("SC_CLK_TCK"))
        return {
            "ingress": tree_cpu_s(self.ingress.pid)[0],
            "worker": tree_cpu_s(self.worker.pid)[0],
            "kafka": self.kafka.cpu_s(),
            "machine": machine,
        }

    def worker_metrics_now(self) -> dict[str, float]:
        return _metrics(self.worker_metrics, [W_RECORDS, W_BATCHES, W_BATCH_S])

    def stop(self) -> None:
        stop_process(self.worker, timeout=20.0)
        stop_process(self.ingress, timeout=20.0)
        if self.kafka is not None:
            self.kafka.stop()
        self.worker = self.ingress = self.kafka = None
