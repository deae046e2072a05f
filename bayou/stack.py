"""``bayou up``: start Kafka (embedded unless configured), one ingress node, one agent worker.

Each part runs as its own child process (as it will in production), so ``up`` only
supervises: it waits until every part reports ready on its metrics endpoint, prints where
to connect, and on SIGINT/SIGTERM (or a child dying) stops them all, by PID.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

import dashboards
from bayou.embedded import EmbeddedKafka
from bayou.metrics_scrape import metric_value
from bayou.net import free_port
from bayou.processes import die_with_parent, stop_processes
from bayou.prometheus import (
    INSTALL_HINT,
    JOB_INGRESS,
    JOB_WORKER,
    Prometheus,
    PrometheusError,
    find_binary,
)
from bayou.prometheus import start as start_prometheus
from bayou.settings import PortTakenError, Settings, check_ports_free
from kafkaio.admin import ensure_topics
from kafkaio.clients import KafkaConnectError

console = Console(highlight=False, soft_wrap=True)
# The recording and alerting rules shipped with the dashboards (promtool-tested).
SHIPPED_RULES = Path(dashboards.__file__).resolve().parent / "prometheus" / "rules.yml"


class StackError(Exception):
    """The stack could not start; the message says why in one line."""


def _ready(host: str, port: int, metric: str) -> bool:
    return metric_value(port, metric, host=host, timeout=0.5) == 1.0


class Stack:
    """The running children of ``bayou up``."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.kafka: EmbeddedKafka | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.bootstrap = settings.kafka_bootstrap or ""
        self.anonymous = settings.allow_anonymous is not False
        self.want_prometheus = False
        self.prometheus: Prometheus | None = None

    def start_prometheus(self) -> None:
        """Prometheus scraping the ingress node and the worker every 5 s, with the shipped
        recording and alerting rules (dashboards/prometheus/rules.yml), data under .bayou/."""
        s = self.settings
        host = s.metrics_host
        targets = {
            JOB_INGRESS: [f"{host}:{s.ingress_metrics_port}"],
            JOB_WORKER: [f"{host}:{s.worker_metrics_port}"],
        }
        directory = self.log_dir.parent / "prometheus"
        # Its TSDB outlives no embedded broker: a new stack starts with empty graphs.
        shutil.rmtree(directory, ignore_errors=True)
        self.prometheus = start_prometheus(
            targets, directory, s.prometheus_port, "5s", [SHIPPED_RULES], ready_timeout=60
        )

    def start_kafka(self) -> None:
        """Start the embedded broker unless BAYOU_KAFKA_BOOTSTRAP is set."""
        if self.settings.kafka_bootstrap:
            return
        self.kafka = EmbeddedKafka(host="127.0.0.1")
        self.bootstrap = self.kafka.start(log=self.log_dir / "kafka.log")
        # Agent state (windows, saved input offsets) refers to the Kafka it was built from;
        # a new embedded broker starts empty, so old state would make the worker skip input.
        shutil.rmtree(self.settings.state_dir, ignore_errors=True)

    def spawn(self, name: str, command: str, args: list[str] | None = None) -> None:
        """Start ``bayou <command>`` as a child with the stack's bootstrap."""
        # The children read their settings themselves; this only passes the environment on.
        env = dict(os.environ)
        env["BAYOU_KAFKA_BOOTSTRAP"] = self.bootstrap
        if self.kafka is not None:
            # The embedded broker holds a fetch for its whole wait: keep it short there.
            env.setdefault("BAYOU_KAFKA_FETCH_WAIT_MS", "5")
        env["BAYOU_MQTT_PORT"] = str(self.settings.mqtt_port)
        env["BAYOU_INGRESS_METRICS_PORT"] = str(self.settings.ingress_metrics_port)
        env["BAYOU_WORKER_METRICS_PORT"] = str(self.settings.worker_metrics_port)
        # A development stack lets anonymous clients in unless told otherwise (and says so).
        env["BAYOU_ALLOW_ANONYMOUS"] = str(self.anonymous).lower()
        with open(self.log_dir / f"{name}.log", "ab") as log:
            self.children[name] = subprocess.Popen(
                [sys.executable, "-m", "bayou.cli", command, *(args or [])],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
                # Own session: a terminal's Ctrl-C reaches only `bayou up`, which then stops
                # the parts in order (ingress and worker first, Kafka last) so they can flush.
                start_new_session=True,
            )

    def dead_child(self) -> str | None:
        """The name and exit code of a child that exited, if any."""
        for name, proc in self.children.items():
            code = proc.poll()
            if code is not None:
                return f"{name} exited with code {code} (see {self.log_dir / (name + '.log')})"
        return None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every child, wait, SIGKILL stragglers, then stop the embedded broker."""
        if self.prometheus is not None:
            self.prometheus.stop()
            self.prometheus = None
        stop_processes(self.children.values(), timeout)
        self.children.clear()
        if self.kafka:
            self.kafka.stop()


async def _wait_ready(stack: Stack, limit_s: float) -> None:
    s = stack.settings
    checks = {
        "ingress": (s.ingress_metrics_port, "bayou_ingress_ready"),
        "worker": (s.worker_metrics_port, "bayou_agent_ready"),
    }
    pending = dict(checks)
    deadline = time.monotonic() + limit_s
    while pending:
        dead = stack.dead_child()
        if dead:
            raise StackError(dead)
        if time.monotonic() > deadline:
            raise StackError(f"not ready after {limit_s:.0f}s: {', '.join(pending)}")
        for name, (port, metric) in list(pending.items()):
            if await asyncio.to_thread(_ready, s.metrics_host, port, metric):
                del pending[name]
        await asyncio.sleep(0.1)


def run_stack(
    settings: Settings, *, demo: bool, agents: list[str] | None = None, prometheus: bool = False
) -> int:
    """Run the stack until SIGINT/SIGTERM; return the exit code."""
    t0 = time.monotonic()
    if prometheus and find_binary("prometheus") is None:
        raise StackError(f"--prometheus: the prometheus binary is not installed; {INSTALL_HINT}")
    if settings.kafka_bootstrap is None and settings.worker_processing_guarantee == "exactly_once":
        # Measured on Tansu 0.6.0: an open transaction holds back read_committed readers of
        # the whole topic, and a dead worker's transaction is never aborted (docs/agents.md).
        raise StackError(
            "BAYOU_WORKER_PROCESSING_GUARANTEE=exactly_once needs a real Kafka "
            "(set BAYOU_KAFKA_BOOTSTRAP); the embedded broker's transactions are not complete"
        )
    if settings.ingress_metrics_port == 0:
        settings.ingress_metrics_port = free_port(settings.metrics_host)
    if settings.worker_metrics_port == 0:
        settings.worker_metrics_port = free_port(settings.metrics_host)
    if settings.kafka_bootstrap is None and settings.kafka_security_protocol != "PLAINTEXT":
        raise StackError(
            f"BAYOU_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs "
            "BAYOU_KAFKA_BOOTSTRAP: the embedded broker speaks PLAINTEXT only (no SASL, no TLS)"
        )
    if prometheus and settings.prometheus_port == 0:
        settings.prometheus_port = free_port("127.0.0.1")
    ports = ("mqtt", "ingress_metrics", "worker_metrics", *(("prometheus",) if prometheus else ()))
    try:
        check_ports_free(settings, ports)
    except PortTakenError as exc:
        raise StackError(str(exc)) from None
    log_dir = Path(".bayou/logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(settings, log_dir)
    stack.want_prometheus = prometheus
    return asyncio.run(_run(stack, demo, t0, agents or []))


async def _run(stack: Stack, demo: bool, t0: float, agents: list[str]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    s = stack.settings
    try:
        stack.start_kafka()
        try:
            await ensure_topics(
                stack.bootstrap,
                s.all_topics(),
                s.topic_partitions,
                s.replication_factor,
                s.compacted_topics(),
                security=s.kafka_security(),
            )
        except KafkaConnectError as exc:
            raise StackError(str(exc)) from None
        stack.spawn("ingress", "ingress")
        stack.spawn("worker", "worker", [a for m in agents for a in ("--agents", m)])
        await _wait_ready(stack, limit_s=60)
        if stack.want_prometheus:
            try:
                await asyncio.to_thread(stack.start_prometheus)
            except PrometheusError as exc:
                raise StackError(f"--prometheus: {exc}") from None
        ready_s = time.monotonic() - t0
        _print_banner(stack, ready_s)
        fleet_task = None
        if demo:
            from bayou.fleet import run_fleet

            fleet_task = asyncio.create_task(run_fleet(s, stop))
        while not stop.is_set():
            dead = stack.dead_child()
            if dead:
                console.print(f"[red]bayou up: {dead}; stopping[/red]")
                return 1
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
        if fleet_task:
            await asyncio.gather(fleet_task, return_exceptions=True)
        console.print("stopping…")
        return 0
    finally:
        await asyncio.to_thread(stack.stop)


def _print_banner(stack: Stack, ready_s: float) -> None:
    s = stack.settings
    kafka = f"{stack.bootstrap} (embedded Tansu)" if stack.kafka else stack.bootstrap
    console.print(f"[bold green]Bayou is ready[/bold green] in {ready_s:.1f}s")
    console.print(f"  MQTT             mqtt://{s.mqtt_host}:{s.mqtt_port}")
    console.print(f"  Kafka bootstrap  {kafka}")
    if not stack.kafka:
        # How the parts connect, never with what password.
        console.print(f"  Kafka security   {s.kafka_security().describe()}")
    metrics = f"http://{s.metrics_host}:{{}}/metrics"
    console.print(f"  Ingress metrics  {metrics.format(s.ingress_metrics_port)}")
    console.print(f"  Worker metrics   {metrics.format(s.worker_metrics_port)}")
    if stack.prometheus is not None:
        console.print(f"  Prometheus       {stack.prometheus.url}")
        # Grafana cannot run here; say how to point one at this stack (docs/dashboards.md).
        console.print(
            "  Grafana          bayou dashboards build --out /tmp/bayou-grafana "
            f"--prometheus-url {stack.prometheus.url} --mqtt-uri tcp://{s.mqtt_host}:{s.mqtt_port}"
            "\n                   then run grafana/grafana with that provisioning mounted "
            "(docs/dashboards.md#building-and-pushing)"
        )
    console.print(f"  Logs             {stack.log_dir}/")
    if stack.kafka:
        console.print(
            "[yellow]  The embedded Kafka keeps data in memory only: its data is lost when "
            "bayou up stops.[/yellow]\n  Set BAYOU_KAFKA_BOOTSTRAP to use a real Kafka."
        )
    if stack.anonymous:
        console.print(
            "[bold red]  ANONYMOUS MQTT ACCESS IS ON:[/bold red][red] anyone who reaches "
            f"{s.mqtt_host}:{s.mqtt_port} can connect, read every topic and publish to any "
            "device. Fine for development; before exposing it set BAYOU_ALLOW_ANONYMOUS=false "
            "and an authentication method (docs/security.md).[/red]"
        )
    console.print("  Stop with Ctrl-C.")
