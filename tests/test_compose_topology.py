"""The compose topology, run for real as processes on loopback (issue 11, item 4).

Everything is taken from the compose files themselves (compose/docker-compose.yml, its
HAProxy and Prometheus configs), with only addresses and ports rewritten: the 3-node Kafka
cluster (the ``kafka3`` fixture), the topics made by the ``topics`` service's own code and
settings, 2 ``bayou ingress`` nodes with the compose ingress environment and a copy of the
shipped password and ACL files, HAProxy with haproxy.cfg (balance and health checks kept),
2 ``bayou worker`` processes and Prometheus. Then MQTT traffic through HAProxy, and one
ingress node killed: its clients resume their sessions on the other.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bayou.metrics_scrape import metric_value
from bayou.net import free_port, wait_for_port
from bayou.processes import stop_process
from bayou.prometheus import Prometheus
from tests.apache_kafka import ApacheKafka
from tests.conftest import BAYOU, Proc, bayou_env, start_bayou
from tests.helpers import Mqtt
from tests.prometheus_fixture import need_binary

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = ROOT / "compose"
CLIENTS = 4
READINGS = 3
# Readings further apart (event time) than the demo's alert cool-down (60s): each commands.
COOLDOWN_GAP = 3600.0


def _wait(cond: Callable[[], bool], timeout: float, what: str, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s\n{log()[-3000:]}")
        time.sleep(0.1)


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def _metric(port: int, name: str) -> float | None:
    try:
        return metric_value(port, name)
    except OSError:
        return None


def _accepts(port: int) -> bool:
    try:
        wait_for_port("127.0.0.1", port, timeout=0)
    except TimeoutError:
        return False
    return True


def _ready(p: Proc, metric: str) -> Callable[[], bool]:
    """True once ``p`` exited (the caller then fails with its log) or reports ``metric`` 1."""
    return lambda: p.proc.poll() is not None or _metric(p.metrics_port, metric) == 1.0


def _bind_dir(service: dict[str, Any], target: str) -> Path:
    for volume in service["volumes"]:
        source, inside = str(volume).split(":")[:2]
        if inside == target:
            return (COMPOSE_DIR / source).resolve()
    raise AssertionError(f"nothing mounted at {target}")


def _haproxy_cfg(text: str, bind: int, servers: dict[str, tuple[int, int]]) -> str:
    """haproxy.cfg with only its frontend bind and server addresses/check ports rewritten,
    and its global maxconn lowered to what this process's file limit allows (a container's
    limit is higher: HAProxy refuses to start when it cannot raise it to 2 x maxconn)."""
    fds = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    out = []
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["maxconn"] and 2 * int(words[1]) + 100 > fds:
            line = line.replace(words[1], str((fds - 100) // 2))
        elif words[:1] == ["bind"]:
            assert words[1].startswith(":"), line
            line = line.replace(words[1], f"127.0.0.1:{bind}")
        elif words[:1] == ["server"]:
            mqtt, metrics = servers[words[1]]
            line = line.replace(words[2], f"127.0.0.1:{mqtt} port {metrics}")
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.mark.timeout(300)
def test_the_compose_topology_serves_spreads_and_fails_over(
    kafka3: ApacheKafka, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    compose = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())
    services: dict[str, dict[str, Any]] = compose["services"]
    bootstrap = kafka3.bootstrap()
    ingresses = {
        n: s for n, s in services.items() if list(s.get("command") or [])[:1] == ["ingress"]
    }
    workers = {n: s for n, s in services.items() if list(s.get("command") or [])[:1] == ["worker"]}
    assert len(ingresses) == 2 and len(workers) == 2, (ingresses, workers)

    # The topics, by the topics service's own code and environment.
    topics = services["topics"]
    code = topics["entrypoint"][topics["entrypoint"].index("-c") + 1]
    made = subprocess.run(
        [sys.executable, "-c", code],
        env=bayou_env(**{**_env(topics), "BAYOU_KAFKA_BOOTSTRAP": bootstrap}),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr

    # A copy of the shipped auth files, with one test user per client added to the copy.
    first = next(iter(ingresses.values()))
    etc_inside = "/etc/bayou"
    etc = tmp_path / "etc-bayou"
    shutil.copytree(_bind_dir(first, etc_inside), etc)
    users = {f"topo-{i}": f"secret-{i}-{os.getpid()}" for i in range(CLIENTS)}
    for user, password in users.items():
        added = subprocess.run(
            [*BAYOU, "passwd", "add", str(etc / "passwd"), user, "--password-stdin"],
            input=password + "\n", capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert added.returncode == 0, added.stdout + added.stderr

    procs: list[Proc] = []
    others: list[subprocess.Popen[bytes]] = []
    prom: Prometheus | None = None
    clients: list[Mqtt] = []
    try:
        nodes: dict[str, Proc] = {}
        for name, service in ingresses.items():
            env = _env(service)
            mqtt_port, metrics_port = free_port(), free_port()
            env |= {
                "BAYOU_KAFKA_BOOTSTRAP": bootstrap,
                "BAYOU_MQTT_HOST": "127.0.0.1",
                "BAYOU_MQTT_PORT": str(mqtt_port),
                "BAYOU_METRICS_HOST": "127.0.0.1",
                "BAYOU_INGRESS_METRICS_PORT": str(metrics_port),
            }
            for key in ("BAYOU_AUTH_PASSWORD_FILE", "BAYOU_ACL_FILE"):
                env[key] = env[key].replace(etc_inside, str(etc), 1)
            log = tmp_path / f"{name}.log"
            p = Proc(start_bayou(list(service["command"]), bayou_env(**env), log), log,
                     mqtt_port, metrics_port)  # fmt: skip
            procs.append(p)
            nodes[name] = p
        for name, service in workers.items():
            env = _env(service)
            metrics_port = free_port()
            env |= {
                "BAYOU_KAFKA_BOOTSTRAP": bootstrap,
                "BAYOU_METRICS_HOST": "127.0.0.1",
                "BAYOU_WORKER_METRICS_PORT": str(metrics_port),
                "BAYOU_STATE_DIR": str(tmp_path / name / "state"),
            }
            log = tmp_path / f"{name}.log"
            p = Proc(start_bayou(list(service["command"]), bayou_env(**env), log), log, 0,
                     metrics_port)  # fmt: skip
            procs.append(p)

        lb_log = tmp_path / "haproxy.log"

        def lb_text(errors: str) -> str:
            return lb_log.read_text(errors=errors) if lb_log.exists() else ""

        def logs() -> str:
            return "\n".join(f"--- {p.log.name}\n{p.log_text()[-1500:]}" for p in procs) + (
                f"\n--- haproxy\n{lb_text(errors='replace')[-1500:]}"
            )

        for p in procs:
            metric = "bayou_ingress_ready" if p.mqtt_port else "bayou_agent_ready"
            _wait(_ready(p, metric), 120, f"{p.log.name} ready", logs)
            assert p.proc.poll() is None, logs()
        # HAProxy with the shipped config, addresses rewritten; started once the ingress nodes
        # are ready, as compose does (depends_on: service_healthy).
        lb_port = free_port()
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(
            _haproxy_cfg(
                (COMPOSE_DIR / "haproxy" / "haproxy.cfg").read_text(),
                lb_port,
                {n: (p.mqtt_port, p.metrics_port) for n, p in nodes.items()},
            )
        )
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        with open(lb_log, "ab") as out:
            lb = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
            others.append(lb)

        # Prometheus with the shipped config, targets rewritten.
        prom_dir = tmp_path / "prometheus"
        prom_dir.mkdir()
        shutil.copy(ROOT / "dashboards" / "prometheus" / "rules.yml", prom_dir / "rules.yml")
        prom_port = free_port()
        where: dict[str, str] = {}
        for n, s in ingresses.items():
            where[f"{n}:{_env(s)['BAYOU_INGRESS_METRICS_PORT']}"] = (
                f"127.0.0.1:{nodes[n].metrics_port}"
            )
        for (n, s), p in zip(workers.items(), procs[len(nodes) :], strict=True):
            where[f"{n}:{_env(s)['BAYOU_WORKER_METRICS_PORT']}"] = f"127.0.0.1:{p.metrics_port}"
        where["localhost:9090"] = f"127.0.0.1:{prom_port}"
        prom_cfg = yaml.safe_load((COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text())
        for job in prom_cfg["scrape_configs"]:
            for static in job["static_configs"]:
                static["targets"] = [where[t] for t in static["targets"]]
        (prom_dir / "prometheus.yml").write_text(yaml.safe_dump(prom_cfg))
        need_binary("prometheus")
        prom = Prometheus(prom_port, prom_dir, prom_dir / "prometheus.yml")
        prom.launch()

        prom.wait_ready(60)
        # HAProxy binds in ~0.1 s alone, but under the full suite's load it was seen not yet
        # listening once Prometheus was ready: wait for the bind, bounded, or fail with its log.
        _wait(lambda: lb.poll() is not None or _accepts(lb_port), 30, "HAProxy listening", logs)
        assert lb.poll() is None, logs()
        started_s = time.monotonic() - t0

        # Clients through HAProxy: both nodes must be up in HAProxy (rise 2 checks) first.
        def connect(i: int, user: str) -> Mqtt:
            c = Mqtt(lb_port, f"topo-client-{i}", clean_session=False, username=user,
                     password=users[user])  # fmt: skip
            c.client.reconnect_delay_set(1, 2)
            clients.append(c)
            return c.connect()

        for i, user in enumerate(users):
            c = connect(i, user)
            c.subscribe(f"devices/{user}/commands")

        def conns(p: Proc) -> float:
            return _metric(p.metrics_port, "bayou_ingress_connections") or 0.0

        _wait(
            lambda: sum(conns(p) for p in nodes.values()) == CLIENTS,
            30,
            "all connections counted",
            logs,
        )
        spread = {n: conns(p) for n, p in nodes.items()}
        assert all(v >= 1 for v in spread.values()), f"connections not spread: {spread}\n{logs()}"

        def send_and_expect(base_ts: float) -> None:
            for c, user in zip(clients, users, strict=True):
                for k in range(READINGS):
                    body = {"temperature": 31.5, "humidity": 50.0, "ts": base_ts + k * COOLDOWN_GAP}
                    info = c.publish(f"sensors/{user}/telemetry", json.dumps(body), qos=1)
                    info.wait_for_publish(20)
                    assert info.is_published(), f"{user}: no PUBACK"
            for c, user in zip(clients, users, strict=True):
                commands = f"devices/{user}/commands"
                for _ in range(READINGS):
                    msg = c.expect(lambda m, t=commands: m.topic == t, timeout=60)  # type: ignore[misc]
                    assert json.loads(msg.payload)["device"] == user

        send_and_expect(1000.0)

        # Prometheus sees all four Bayou targets up.
        def bayou_up() -> bool:
            try:
                return prom is not None and prom.value('count(up{job=~"bayou-.*"} == 1)') == 4
            except Exception:
                return False

        _wait(
            bayou_up, 60, "Prometheus: 4 Bayou targets up", lambda: prom.log_tail() if prom else ""
        )

        # Kill one ingress node: its clients reconnect through HAProxy to the other.
        victim_name = max(spread, key=lambda n: spread[n])
        victim = nodes[victim_name]
        survivor = next(p for n, p in nodes.items() if n != victim_name)
        for c in clients:
            c.connack_flags = -1
        t_kill = time.monotonic()
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(10)
        _wait(lambda: conns(survivor) == CLIENTS and all(c.client.is_connected() for c in clients),
              90, "every client reconnected to the surviving node", logs)  # fmt: skip
        failover_s = time.monotonic() - t_kill
        moved = [c for c in clients if c.connack_flags != -1]
        assert len(moved) == spread[victim_name], (len(moved), spread)
        assert all(c.connack_flags == 1 for c in moved), "a moved client's session did not resume"
        send_and_expect(1000.0 + READINGS * COOLDOWN_GAP)
        print(f"\ntopology started in {started_s:.1f}s; failover in {failover_s:.1f}s")
    finally:
        for c in clients:
            c.close()
        if prom is not None:
            prom.stop()
        for o in others:
            stop_process(o)
        for p in procs:
            stop_process(p.proc)
