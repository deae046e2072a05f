"""`bayou up`: one command starts the stack, Ctrl-C/SIGTERM stops it with no orphans."""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from bayou.embedded import EmbeddedKafka
from bayou.metrics_scrape import metric_value
from bayou.net import free_port
from bayou.processes import stop_process
from bayou.prometheus import JOB_INGRESS, JOB_WORKER, Prometheus
from tests.conftest import BAYOU, bayou_env
from tests.helpers import Mqtt, alive, children_of, wait_until
from tests.prometheus_fixture import need_binary

pytestmark = pytest.mark.integration


def _up_env(tmp_path: Path, **extra: str) -> tuple[dict[str, str], int]:
    mqtt = free_port()
    env = bayou_env(
        BAYOU_MQTT_PORT=str(mqtt),
        BAYOU_INGRESS_METRICS_PORT=str(free_port()),
        BAYOU_WORKER_METRICS_PORT=str(free_port()),
        BAYOU_STATE_DIR=str(tmp_path / "state"),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    if "BAYOU_ALLOW_ANONYMOUS" not in extra:
        del env["BAYOU_ALLOW_ANONYMOUS"]  # `bayou up`'s own default: anonymous, said loudly
    return env, mqtt


class Lines:
    """Lines of a child's stdout, read by a thread so waits can have deadlines.

    (select() on the pipe would miss lines already read into Python's buffer.)
    """

    def __init__(self, stream: IO[str]) -> None:
        self.q: queue.Queue[str | None] = queue.Queue()
        self.seen = ""
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self.q.put(line)
        except (ValueError, OSError):  # the test closed the pipe after the child exited
            pass
        self.q.put(None)

    def until(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.q.get(timeout=max(0.01, left))
            except queue.Empty:
                line = ""
            if line is None or left <= 0:
                raise TimeoutError(f"no line matching {pattern!r}; output so far:\n{self.seen}")
            self.seen += line
            m = re.search(pattern, line)
            if m:
                return m


def _start_up(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*BAYOU, "up", *args], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def _close(proc: subprocess.Popen[str]) -> None:
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_up_starts_serves_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    env, mqtt = _up_env(tmp_path)
    # State left by an earlier run against another (now gone) embedded broker.
    stale = tmp_path / "state" / "demo" / "stale-marker"
    stale.parent.mkdir(parents=True)
    stale.write_text("from a previous embedded broker")
    proc = _start_up(tmp_path, env)
    try:
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        lines.until(r"Bayou is ready in ([\d.]+)s", 90)
        lines.until(r"Stop with Ctrl-C", 10)
        banner = lines.seen
        assert f"mqtt://127.0.0.1:{mqtt}" in banner
        assert "data is lost" in banner
        assert "ANONYMOUS MQTT ACCESS IS ON" in banner
        assert "Kafka bootstrap  127.0.0.1:" in banner
        kids = children_of(proc.pid)
        assert len(kids) >= 3, "expected Tansu, an ingress node and a worker"
        assert not stale.exists(), "state of an earlier embedded broker must not be reused"

        # The quickstart path: mosquitto clients against the stack.
        metrics = int(env["BAYOU_INGRESS_METRICS_PORT"])
        subs = metric_value(metrics, "bayou_ingress_subscriptions") or 0.0
        sub = subprocess.Popen(
            ["mosquitto_sub", "-p", str(mqtt), "-t", "devices/d-up/commands", "-q", "1",
             "-C", "1", "-W", "30"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_until(
            lambda: (metric_value(metrics, "bayou_ingress_subscriptions") or 0.0) > subs,
            20,
            "mosquitto_sub's subscription on the ingress node",
        )
        reading = json.dumps({"temperature": 45.0, "humidity": 50.0, "ts": time.time()})
        subprocess.run(
            ["mosquitto_pub", "-p", str(mqtt), "-t", "sensors/d-up/telemetry", "-q", "1",
             "-m", reading],
            check=True, timeout=10,
        )  # fmt: skip
        out, _ = sub.communicate(timeout=40)
        assert json.loads(out)["command"] == "cool"

        proc.send_signal(sig)
        assert proc.wait(30) == 0
        for pid in kids:
            assert not alive(pid), f"child {pid} outlived bayou up"
    finally:
        stop_process(proc)
        _close(proc)


def test_up_demo_runs_a_fleet_and_reports_commands_delivered(tmp_path: Path) -> None:
    env, _ = _up_env(
        tmp_path,
        BAYOU_FLEET_DEVICES="4",
        BAYOU_FLEET_HOT_DEVICES="2",
        BAYOU_FLEET_INTERVAL_SECONDS="0.2",
    )
    proc = _start_up(tmp_path, env, "--demo")
    try:
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        m = lines.until(r"messages in (\d+).*commands delivered ([1-9]\d*)", 90)
        assert int(m.group(1)) > 0
        # The fleet answers each command (closed loop), and the tracker sees the answer.
        lines.until(r"answered ([1-9]\d*)", 60)
        port = int(env["BAYOU_WORKER_METRICS_PORT"])
        labels = {"app": "demo", "status": "acknowledged"}
        wait_until(
            lambda: (metric_value(port, "bayou_agent_commands_total", labels) or 0) >= 1,
            60, "the tracker to count an acknowledged command",
        )  # fmt: skip
        kids = children_of(proc.pid)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        for pid in kids:
            assert not alive(pid)
    finally:
        stop_process(proc)
        _close(proc)


def _up_refused(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """``bayou up`` with these settings, expected to stop before starting anything."""
    env, _ = _up_env(tmp_path)
    env.update(settings)
    return subprocess.run(
        [*BAYOU, "up"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


def test_up_with_mqtt_port_taken_names_port_and_setting(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = _up_refused(tmp_path, BAYOU_MQTT_PORT=str(port))
    assert r.returncode == 1
    assert f"127.0.0.1:{port} is already in use; set BAYOU_MQTT_PORT" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_bad_setting_is_named(tmp_path: Path) -> None:
    r = _up_refused(tmp_path, BAYOU_DEMO_THRESHOLD="warm")
    assert r.returncode == 2
    assert "BAYOU_DEMO_THRESHOLD" in r.stderr
    assert "warm" in r.stderr


def test_up_refuses_exactly_once_on_the_embedded_broker(tmp_path: Path) -> None:
    r = _up_refused(tmp_path, BAYOU_WORKER_PROCESSING_GUARANTEE="exactly_once")
    assert r.returncode == 1
    assert "BAYOU_WORKER_PROCESSING_GUARANTEE=exactly_once needs a real Kafka" in r.stderr
    assert "BAYOU_KAFKA_BOOTSTRAP" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_ingress_without_kafka_says_what_to_set(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "bayou.cli", "ingress"], env=bayou_env(), cwd=tmp_path,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert "BAYOU_KAFKA_BOOTSTRAP" in r.stderr


def test_worker_with_metrics_port_taken_names_port_and_setting(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = bayou_env(BAYOU_KAFKA_BOOTSTRAP="127.0.0.1:1", BAYOU_WORKER_METRICS_PORT=str(port))
        r = subprocess.run(
            [*BAYOU, "worker"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"bayou worker: worker metrics port 127.0.0.1:{port} is already in use; "
        "set BAYOU_WORKER_METRICS_PORT to a free port"
    )


def test_up_uses_the_configured_kafka_instead_of_embedding_one(
    tmp_path: Path, kafka: EmbeddedKafka
) -> None:
    """BAYOU_KAFKA_BOOTSTRAP set: no embedded broker; the stack runs on the given Kafka."""
    env, mqtt = _up_env(tmp_path, BAYOU_KAFKA_BOOTSTRAP=kafka.bootstrap)
    proc = _start_up(tmp_path, env)
    try:
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        lines.until(r"Bayou is ready", 90)
        lines.until(r"Stop with Ctrl-C", 10)
        assert f"Kafka bootstrap  {kafka.bootstrap}\n" in lines.seen
        assert "embedded" not in lines.seen
        kids = children_of(proc.pid)
        assert len(kids) == 2, "only an ingress node and a worker: no broker of its own"
        device = Mqtt(mqtt, "d-ext").connect()
        try:
            device.subscribe("devices/d-ext/commands", 1)
            reading = json.dumps({"temperature": 45.0, "humidity": 50.0, "ts": time.time()})
            device.publish("sensors/d-ext/telemetry", reading).wait_for_publish(10)
            assert json.loads(device.expect().payload)["device"] == "d-ext"
        finally:
            device.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert kafka.proc is not None and kafka.proc.poll() is None, "its Kafka is not its own"
    finally:
        stop_process(proc)
        _close(proc)


def test_up_with_prometheus_scrapes_the_stack_and_stops_it(tmp_path: Path) -> None:
    """`bayou up --prometheus` runs a real Prometheus (Debian's package) scraping the ingress
    node and the worker with the shipped rules; Ctrl-C stops it with the rest."""
    need_binary("prometheus")
    prom_port = free_port()
    env, _ = _up_env(tmp_path, BAYOU_PROMETHEUS_PORT=str(prom_port))
    proc = _start_up(tmp_path, env, "--prometheus")
    try:
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        lines.until(r"Bayou is ready in ([\d.]+)s", 120)
        lines.until(r"Stop with Ctrl-C", 10)
        assert f"Prometheus       http://127.0.0.1:{prom_port}" in lines.seen
        assert f"--prometheus-url http://127.0.0.1:{prom_port}" in lines.seen
        kids = children_of(proc.pid)
        prom = Prometheus(prom_port, tmp_path / ".bayou" / "prometheus", Path("unused"))

        def both_up() -> bool:
            ups = {r["metric"]["job"]: r["value"][1] for r in prom.query("up")}
            return ups == {JOB_INGRESS: "1", JOB_WORKER: "1"}

        # Prometheus's first scrape of static targets comes ~5 s after start, then every 5 s.
        wait_until(both_up, 60, "Prometheus scraping the ingress node and the worker")
        assert prom.query("bayou_ingress_ready") and prom.query("bayou_agent_ready")
        # The shipped rules are loaded.
        groups = prom.api("rules", {})["groups"]
        assert any(r["name"] == "BayouIngressDown" for g in groups for r in g["rules"])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        for pid in kids:
            assert not alive(pid), f"child {pid} outlived bayou up"
    finally:
        stop_process(proc)
        _close(proc)


def test_up_with_prometheus_but_none_installed_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No Prometheus here to uninstall: the lookup is made to find none (the only stand-in),
    and the stack must refuse before it starts anything, saying how to install it."""
    import bayou.stack
    from bayou.settings import Settings

    monkeypatch.setattr(bayou.stack, "find_binary", lambda name="prometheus": None)
    with pytest.raises(bayou.stack.StackError, match="make prometheus-deps"):
        bayou.stack.run_stack(Settings(), demo=False, prometheus=True)
