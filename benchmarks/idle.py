"""The ``idle_memory`` scenario: broker RSS per idle connection.

``--idle-connections`` clients CONNECT (clean session, a large keep-alive) from generator
processes and then send nothing; the harness reads the broker's VmRSS before, while they are
connected, and after they disconnect.
"""

from __future__ import annotations

import argparse
import errno
import multiprocessing as mp
import selectors
import socket
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

from bayou.processes import stop_processes
from benchmarks.brokers import Broker
from benchmarks.connections import close_all, connect_many, raise_nofile
from benchmarks.procfs import nofile_limits
from benchmarks.procs import expect_reports, shares
from benchmarks.stats import medians


def kib_per_connection(rss_before_kib: int, rss_after_kib: int, connections: int) -> float | None:
    """RSS growth per connection in KiB; None when there were no connections."""
    if connections <= 0:
        return None
    return (rss_after_kib - rss_before_kib) / connections


def idle_worker_main(
    host: str,
    port: int,
    index: int,
    count: int,
    keepalive: int,
    client_prefix: str,
    results: Queue[Any],
    disconnect: Event,
) -> None:
    """Connect ``count`` idle clients, report, hold them until ``disconnect``, then close them."""
    socks: list[socket.socket] = []
    try:
        limit = raise_nofile(count + 64)
        if limit < count + 16:
            raise OSError(errno.EMFILE, f"RLIMIT_NOFILE is {limit}, need {count + 16}")
        ids = [f"{client_prefix}-idle-{index}-{i}" for i in range(count)]
        t0 = time.monotonic()
        socks = connect_many(host, port, ids, keepalive)
        results.put(("connected", index, (len(socks), time.monotonic() - t0)))
        if not disconnect.wait(300.0):
            raise TimeoutError("never told to disconnect")
        # A broker that closed an idle client would show here as a readable socket.
        sel = selectors.DefaultSelector()
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        dropped = len(sel.select(0))
        sel.close()
        close_all(socks)
        socks = []
        results.put(("closed", index, dropped))
    except Exception as exc:
        results.put(("error", index, f"{type(exc).__name__}: {exc}"))
    finally:
        close_all(socks, polite=False)


def run_idle(broker: Broker, args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    """Broker RSS before, with ``--idle-connections`` idle clients, and after they leave."""
    n = args.idle_connections
    soft, _hard = nofile_limits(broker.pid())
    if soft is not None and soft < n + 64:
        raise RuntimeError(f"{broker.name} may open only {soft} files; {n} clients need more")
    ctx = mp.get_context("fork")
    results: mp.Queue[Any] = ctx.Queue()
    disconnect = ctx.Event()
    procs = [
        ctx.Process(
            target=idle_worker_main,
            args=(
                "127.0.0.1",
                broker.port,
                i,
                count,
                args.idle_keepalive,
                f"bench-{run_id}",
                results,
                disconnect,
            ),
            daemon=True,
        )
        for i, count in enumerate(shares(n, args.idle_procs))
    ]
    time.sleep(args.idle_settle / 2)
    rss_before = broker.rss_kib()
    t0 = time.monotonic()
    for proc in procs:
        proc.start()
    try:
        conn = expect_reports(results, "connected", len(procs), 300.0, "connected")
        connect_s = time.monotonic() - t0
        connected = sum(c for c, _s in conn.values())
        time.sleep(args.idle_settle)
        rss_connected = broker.rss_kib()
        cpu_idle0 = broker.cpu()["broker_cpu_s"]
        time.sleep(1.0)
        cpu_idle = broker.cpu()["broker_cpu_s"] - cpu_idle0
        disconnect.set()
        dropped = sum(expect_reports(results, "closed", len(procs), 120.0, "closed").values())
        time.sleep(args.idle_settle)
        rss_after = broker.rss_kib()
    finally:
        disconnect.set()
        stop_processes(procs, 5.0, sig=None)
    per = kib_per_connection(rss_before, rss_connected, connected)
    return {
        "connections": connected,
        "dropped_while_idle": dropped,
        "connect_s": round(connect_s, 3),
        "connects_per_s": round(connected / connect_s, 1) if connect_s > 0 else None,
        "rss_before_kib": rss_before,
        "rss_connected_kib": rss_connected,
        "rss_after_disconnect_kib": rss_after,
        "kib_per_connection": round(per, 3) if per is not None else None,
        "kib_kept_after_disconnect": rss_after - rss_before,
        "idle_cpu_s_per_s": round(cpu_idle, 3),
    }


_IDLE_MEDIAN_KEYS = [
    "kib_per_connection",
    "rss_before_kib",
    "rss_connected_kib",
    "rss_after_disconnect_kib",
    "kib_kept_after_disconnect",
    "connect_s",
    "connects_per_s",
    "idle_cpu_s_per_s",
]


def summarize_idle(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each idle-memory figure over the runs; the raw runs are kept alongside."""
    out: dict[str, Any] = dict(medians(runs, _IDLE_MEDIAN_KEYS))
    out["connections"] = min(r["connections"] for r in runs)
    out["runs"] = runs
    return out
