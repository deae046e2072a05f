"""The ``connect_auth`` scenario (opt-in): what authentication costs at CONNECT.

Per run and broker: the broker is restarted requiring a password (its own password file, see
:mod:`benchmarks.auth_setup`); one CONNECT with a wrong password must be refused (CONNACK 4 or
5), or the run fails: it would not be measuring authentication. Then ``--auth-connects``
clients CONNECT with the right username and password, one after another in each of
:data:`PROCS` generator processes running side by side, each DISCONNECTing as soon as its
CONNACK is in. The broker is then restarted as the harness starts it (anonymous clients) and
the same number of clients CONNECT without credentials. Figures per phase: connects/s (wall
clock, start signal to the last CONNACK), connects per broker CPU-second, and the CONNECT ->
CONNACK latency p50/p99/max.

Both phases run on a freshly started broker process, and the broker is left anonymous, as the
other scenarios expect it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

from bayou.processes import stop_processes
from benchmarks.auth_setup import PASSWORD, USERNAME, restart_with_auth
from benchmarks.brokers import HOST, Broker
from benchmarks.connections import connect_once
from benchmarks.procs import expect_reports, shares, spawn_all
from benchmarks.stats import percentile

# Generator processes connecting side by side: more than Bayou's 2 hashing threads, so the
# broker, not one client's round trips, sets the rate.
PROCS = 4
PHASES = ("auth", "anonymous")
# MQTT 3.1.1 CONNACK return codes for bad credentials and not authorised.
REFUSED_CODES = (4, 5)


def connect_worker_main(
    port: int,
    index: int,
    client_ids: list[str],
    credentials: tuple[str, bytes] | None,
    results: Queue[Any],
    start: Event,
) -> None:
    """CONNECT each of ``client_ids`` in turn (DISCONNECT once accepted); report latencies."""
    user, password = credentials if credentials is not None else (None, None)
    try:
        results.put(("ready", index, None))
        if not start.wait(60.0):
            raise TimeoutError("never told to start")
        took: list[int] = []
        for cid in client_ids:
            code, ns = connect_once(HOST, port, cid, user, password)
            if code != 0:
                raise ConnectionError(f"client {cid!r} refused: CONNACK return code {code}")
            took.append(ns)
        results.put(("result", index, (took, time.monotonic_ns())))
    except Exception as exc:
        results.put(("error", index, f"{type(exc).__name__}: {exc}"))


def measure_connects(
    broker: Broker, ids: list[str], credentials: tuple[str, bytes] | None
) -> dict[str, Any]:
    """``ids`` CONNECT from up to :data:`PROCS` processes side by side; the phase's figures."""
    ctx = mp.get_context("fork")
    results: mp.Queue[Any] = ctx.Queue()
    start = ctx.Event()
    nprocs = min(PROCS, len(ids))
    parts = shares(len(ids), nprocs)
    starts = [sum(parts[:i]) for i in range(nprocs)]
    procs = spawn_all(
        ctx,
        connect_worker_main,
        [
            (broker.port, i, ids[starts[i] : starts[i] + parts[i]], credentials, results, start)
            for i in range(nprocs)
        ],
    )
    try:
        expect_reports(results, "ready", nprocs, 60.0, "connect processes ready")
        cpu0 = broker.cpu()
        t0 = time.monotonic_ns()
        start.set()
        # A bound, not a figure: 0.5 s a connect is 50 times what an argon2id check takes here.
        got = expect_reports(results, "result", nprocs, 60.0 + len(ids) * 0.5, "connects")
        cpu1 = broker.cpu()
    finally:
        start.set()
        stop_processes(procs, 5.0, sig=None)
    return phase_figures(
        sorted(ns for took, _end in got.values() for ns in took),
        (max(end for _took, end in got.values()) - t0) / 1e9,
        {k: cpu1[k] - cpu0[k] for k in cpu0},
    )


def phase_figures(took_ns: list[int], seconds: float, cpu: dict[str, float]) -> dict[str, Any]:
    """A phase's figures from its sorted CONNECT -> CONNACK times and the broker's CPU use."""
    n = len(took_ns)
    out: dict[str, Any] = {
        "connects": n,
        "seconds": round(seconds, 3),
        "connects_per_s": round(n / seconds, 1) if seconds > 0 else None,
        "broker_cpu_s": round(cpu["broker_cpu_s"], 3),
        "connects_per_broker_cpu_s": (
            round(n / cpu["broker_cpu_s"], 1) if cpu["broker_cpu_s"] > 0 else None
        ),
        "p50_ms": round(percentile(took_ns, 0.5), 3) if n else None,
        "p99_ms": round(percentile(took_ns, 0.99), 3) if n else None,
        "max_ms": round(took_ns[-1] / 1e6, 3) if n else None,
    }
    if "kafka_cpu_s" in cpu:
        out["kafka_cpu_s"] = round(cpu["kafka_cpu_s"], 3)
    return out


def check_auth_is_on(broker: Broker, run_id: str) -> int:
    """A wrong password must be refused (its CONNACK return code); the right one accepted."""
    wrong = (PASSWORD + "-wrong").encode()
    code, _ns = connect_once(HOST, broker.port, f"auth-{run_id}-wrong", USERNAME, wrong)
    if code not in REFUSED_CODES:
        raise RuntimeError(
            f"{broker.name}: a CONNECT with a wrong password got CONNACK return code {code}, "
            f"not one of {REFUSED_CODES}: authentication is not on, nothing to measure"
        )
    ok, _ns = connect_once(HOST, broker.port, f"auth-{run_id}-check", USERNAME, PASSWORD.encode())
    if ok != 0:
        raise RuntimeError(f"{broker.name}: the right password was refused (return code {ok})")
    return code


def run_connect_auth(broker: Broker, args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    """``connect_auth`` against one broker: authenticated connects, then anonymous ones."""
    n = args.auth_connects
    out: dict[str, Any] = {"procs": min(PROCS, n)}
    try:
        full = bool(getattr(args, "auth_full_check", False))
        out["full_check"] = full
        out["restart_s"] = round(restart_with_auth(broker, required=True, full_check=full), 3)
        out["wrong_password_code"] = check_auth_is_on(broker, run_id)
        ids = [f"auth-{run_id}-{i}" for i in range(n)]
        phases = {"auth": measure_connects(broker, ids, (USERNAME, PASSWORD.encode()))}
    finally:
        # Back to anonymous clients whatever happened: the next runs and scenarios expect it.
        restart_with_auth(broker, required=False)
    # The anonymous connect that checked the restart is also the phase's warm-up, as the
    # right-password check is the authenticated phase's.
    code, _ns = connect_once(HOST, broker.port, f"anon-{run_id}-check")
    if code != 0:
        raise RuntimeError(f"{broker.name}: an anonymous CONNECT was refused (code {code})")
    phases["anonymous"] = measure_connects(broker, [f"anon-{run_id}-{i}" for i in range(n)], None)
    for phase, figures in phases.items():
        out.update({f"{phase}_{k}": v for k, v in figures.items()})
    a, b = out["auth_connects_per_s"], out["anonymous_connects_per_s"]
    # < 1: authenticating costs connects/s; the figure the table is about.
    out["auth_vs_anonymous"] = round(a / b, 3) if a and b else None
    return out
