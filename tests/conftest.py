"""Fixtures that start real parts: the embedded Tansu broker, an ingress node, a worker.

Every process is started on free ports of 127.0.0.1 and stopped by its PID in teardown.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from bayou.embedded import EmbeddedKafka
from bayou.metrics_scrape import metric_value
from bayou.net import free_port
from bayou.processes import stop_process
from bayou.settings import Settings
from kafkaio.admin import ensure_topics
from tests.apache_kafka import ApacheKafka
from tests.helpers import wait_until

# The `prometheus` fixture (a real Prometheus per test) lives with its helpers.
from tests.prometheus_fixture import prometheus  # noqa: F401

BAYOU = [sys.executable, "-m", "bayou.cli"]

# Hypothesis (tests/test_fuzz_*.py): "ci" is reproducible (derandomized, no example database),
# chosen when CI is set; "dev" explores new examples on every run. Deadlines are generous:
# CI's 2 cores are shared.
settings.register_profile("dev", deadline=2000, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", settings.get_profile("dev"), derandomize=True, database=None, print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def bayou_env(**extra: str) -> dict[str, str]:
    """The environment for a bayou child: this one without BAYOU_* settings, plus ``extra``.

    Anonymous MQTT clients are allowed (the tests' clients connect with no credentials)
    unless ``extra`` says otherwise; tests of the production default remove the setting.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAYOU_")}
    env["BAYOU_ALLOW_ANONYMOUS"] = "true"
    # Most tests run on the embedded broker, which holds a fetch for its whole wait.
    env["BAYOU_KAFKA_FETCH_WAIT_MS"] = "5"
    env.update(extra)
    return env


@dataclass
class Proc:
    """A bayou child process started by a fixture."""

    proc: subprocess.Popen[bytes]
    log: Path
    mqtt_port: int = 0
    metrics_port: int = 0

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_bayou(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            BAYOU + command, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip


def create_topics(bootstrap: str) -> None:
    s = Settings()
    asyncio.run(ensure_topics(bootstrap, s.all_topics(), 4, 1, s.compacted_topics()))


def start_kafka(log: Path) -> EmbeddedKafka:
    kafka = EmbeddedKafka()
    kafka.start(log=log)
    create_topics(kafka.bootstrap)
    return kafka


def _ready(p: Proc, metric: str, what: str, limit_s: float) -> Proc:
    """Wait until ``p`` reports ``metric`` = 1 (stop it and fail if it does not)."""
    try:
        wait_until(
            lambda: p.proc.poll() is not None or metric_value(p.metrics_port, metric) == 1.0,
            limit_s,
            what,
        )
    except TimeoutError:
        stop_process(p.proc)
        raise
    assert p.proc.poll() is None, p.log_text()
    return p


def start_ingress(bootstrap: str, log: Path, **extra_env: str) -> Proc:
    mqtt_port, metrics_port = free_port(), free_port()
    env = bayou_env(
        BAYOU_KAFKA_BOOTSTRAP=bootstrap,
        BAYOU_MQTT_PORT=str(mqtt_port),
        BAYOU_INGRESS_METRICS_PORT=str(metrics_port),
        BAYOU_LOG_LEVEL="INFO",
        **extra_env,
    )
    p = Proc(start_bayou(["ingress"], env, log), log, mqtt_port, metrics_port)
    return _ready(p, "bayou_ingress_ready", "ingress ready", 30)


def start_worker(
    bootstrap: str, log: Path, state_dir: Path, args: list[str] | None = None, **extra_env: str
) -> Proc:
    metrics_port = free_port()
    env = bayou_env(
        BAYOU_KAFKA_BOOTSTRAP=bootstrap,
        BAYOU_WORKER_METRICS_PORT=str(metrics_port),
        BAYOU_STATE_DIR=str(state_dir),
        BAYOU_LOG_LEVEL="INFO",
        **extra_env,
    )
    p = Proc(start_bayou(["worker", *(args or [])], env, log), log, 0, metrics_port)
    return _ready(p, "bayou_agent_ready", "worker ready", 60)


def kafka_in(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[EmbeddedKafka]:
    """An embedded broker logging under a new ``name`` directory, stopped after (a fixture's
    body: ``yield from``)."""
    k = start_kafka(tmp_path_factory.mktemp(name) / "tansu.log")
    yield k
    k.stop()


def ingress_on(
    kafka: EmbeddedKafka, tmp_path_factory: pytest.TempPathFactory, name: str
) -> Iterator[Proc]:
    """A `bayou ingress` process on ``kafka``, stopped by PID after (a fixture's body)."""
    p = start_ingress(kafka.bootstrap, tmp_path_factory.mktemp(name) / "ingress.log")
    yield p
    stop_process(p.proc)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedKafka]:
    """One embedded broker shared by the session's integration tests."""
    yield from kafka_in(tmp_path_factory, "kafka")


@pytest.fixture(scope="session")
def ingress(kafka: EmbeddedKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """A `bayou ingress` process on the shared broker."""
    yield from ingress_on(kafka, tmp_path_factory, "ingress")


@pytest.fixture(scope="session")
def worker(kafka: EmbeddedKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """A `bayou worker` process (demo agents) on the shared broker."""
    d = tmp_path_factory.mktemp("worker")
    p = start_worker(kafka.bootstrap, d / "worker.log", d / "state")
    yield p
    stop_process(p.proc)


@pytest.fixture
def agents_worker(kafka: EmbeddedKafka, tmp_path: Path) -> Iterator[Callable[[str], Proc]]:
    """Start ``bayou worker --agents <module>`` on the shared broker (state under the test's
    tmp_path); every worker started so is stopped by PID after the test."""
    started: list[Proc] = []

    def start(module: str) -> Proc:
        n = len(started)
        p = start_worker(kafka.bootstrap, tmp_path / f"worker-{n}.log", tmp_path / f"state-{n}",
                         ["--agents", module])  # fmt: skip
        started.append(p)
        return p

    yield start
    for p in started:
        stop_process(p.proc)


@pytest.fixture(scope="session")
def apache_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    """One real Apache Kafka broker for the session (KRaft; PLAINTEXT, SASL and TLS
    listeners; user ``bayou`` with a random password: tests/apache_kafka.py). It fails, never
    skips, when it cannot start (run `make kafka-deps`)."""
    k = ApacheKafka(tmp_path_factory.mktemp("apache-kafka"), {"bayou": secrets.token_urlsafe(18)})
    k.start()
    yield k
    k.stop()


@pytest.fixture(scope="session")
def kafka3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    """A real 3-node Apache Kafka cluster for the session (KRaft, every node a broker and a
    controller; internal topics RF 3, ``min.insync.replicas=2``: tests/apache_kafka.py).
    Tests may kill, restart, pause and resume its nodes and must leave all three running
    (tests/test_kafka_cluster.py's ``cluster`` fixture does). It fails, never skips, when it
    cannot start (run `make kafka-deps`)."""
    k = ApacheKafka(
        tmp_path_factory.mktemp("kafka3"),
        {"bayou": secrets.token_urlsafe(18)},
        brokers=3,
        heap="-Xmx384m",
    )
    k.start(timeout=150)
    yield k
    k.stop()


@pytest.fixture
def fresh_kafka(tmp_path: Path) -> Iterator[EmbeddedKafka]:
    """An embedded Kafka of the test's own (empty topics; it may kill and restart workers)."""
    k = start_kafka(tmp_path / "tansu.log")
    yield k
    k.stop()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Every process a test appends here is stopped by PID at the end."""
    started: list[Proc] = []
    yield started
    for p in started:
        stop_process(p.proc)
