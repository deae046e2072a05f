"""The ``reconnect_1000`` scenario: persistent sessions with messages waiting reconnect at once.

Also the steps ``offline_sessions`` reuses: create persistent sessions, publish to them while
they are offline, and reconnect them all at once, timing until each has its messages
(processes of :mod:`benchmarks.sessions_generator`).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from typing import Any

from bayou.processes import stop_processes
from benchmarks import sessions_generator as gen
from benchmarks.brokers import Broker
from benchmarks.procs import expect_reports, shares, spawn_all
from benchmarks.stats import percentile


def create_sessions(
    broker: Broker, ids: list[str], nprocs: int, timeout: float
) -> tuple[float, list[Any]]:
    """Persistent sessions for ``ids`` (each subscribed to its own topic), then disconnected."""
    ctx = mp.get_context("fork")
    results: mp.Queue[Any] = ctx.Queue()
    parts = shares(len(ids), nprocs)
    starts = [sum(parts[:i]) for i in range(nprocs)]
    t0 = time.monotonic()
    procs = spawn_all(
        ctx,
        gen.create_sessions_main,
        [
            ("127.0.0.1", broker.port, i, ids[starts[i] : starts[i] + parts[i]], results)
            for i in range(nprocs)
        ],
    )
    try:
        expect_reports(results, "created", nprocs, timeout, "sessions created")
    finally:
        stop_processes(procs, 5.0, sig=None)
    return time.monotonic() - t0, procs


def publish_each(
    broker: Broker,
    topics: list[str],
    per_topic: int,
    args: argparse.Namespace,
    timeout: float,
    first_number: int = 0,
) -> float:
    """Publish ``per_topic`` QoS 1 messages to every topic (one process); seconds taken.

    The messages of each topic are numbered from ``first_number`` (in the payload header).
    """
    ctx = mp.get_context("fork")
    results: mp.Queue[Any] = ctx.Queue()
    args_ = ("127.0.0.1", broker.port, 0, topics, per_topic, args.payload, args.window, timeout)
    procs = spawn_all(ctx, gen.publish_each_main, [(*args_, results, first_number)])
    try:
        got = expect_reports(
            results, "published", 1, timeout + 10.0, "published to offline sessions"
        )
    finally:
        stop_processes(procs, 5.0, sig=None)
    return float(got[0][1])


def reconnect_all(
    broker: Broker,
    ids: list[str],
    expected: int,
    nprocs: int,
    deadline_s: float,
) -> dict[str, Any]:
    """Reconnect ``ids`` all at once; time until each has ``expected`` messages (PUBACKed)."""
    ctx = mp.get_context("fork")
    results: mp.Queue[Any] = ctx.Queue()
    start = ctx.Event()
    parts = shares(len(ids), nprocs)
    starts = [sum(parts[:i]) for i in range(nprocs)]
    procs = spawn_all(
        ctx,
        gen.reconnect_main,
        [
            (
                "127.0.0.1",
                broker.port,
                i,
                ids[starts[i] : starts[i] + parts[i]],
                expected,
                deadline_s,
                0.5,
                results,
                start,
            )
            for i in range(nprocs)
        ],
    )
    try:
        expect_reports(results, "ready", nprocs, 60.0, "reconnect processes ready")
        cpu0 = broker.cpu()
        t0 = time.monotonic_ns()
        start.set()
        got: list[gen.ReconnectResult] = list(
            expect_reports(
                results, "result", nprocs, deadline_s + 60.0, "reconnect results"
            ).values()
        )
        cpu1 = broker.cpu()
    finally:
        start.set()
        stop_processes(procs, 5.0, sig=None)
    tally = gen.tally_sessions([r for g in got for r in g.received], expected)
    all_done = all(g.t_done_ns for g in got) and tally["complete"] == len(ids)
    seconds = (max(g.t_done_ns for g in got) - t0) / 1e9 if all_done else None
    connected = [g.t_all_connected_ns for g in got]
    done_ns = sorted(d for g in got for d in g.done_ns)
    broker_cpu = cpu1["broker_cpu_s"] - cpu0["broker_cpu_s"]
    out: dict[str, Any] = {
        "sessions": len(ids),
        "messages_per_session": expected,
        "seconds": round(seconds, 3) if seconds is not None else None,
        "sessions_per_s": round(len(ids) / seconds, 1) if seconds else None,
        "msgs_per_s": round(len(ids) * expected / seconds, 1) if seconds else None,
        "all_connacked_s": round((max(connected) - t0) / 1e9, 3) if all(connected) else None,
        "session_p50_s": round(percentile(done_ns, 0.5) / 1e3, 3) if done_ns else None,
        "session_p99_s": round(percentile(done_ns, 0.99) / 1e3, 3) if done_ns else None,
        "session_present": sum(g.session_present for g in got),
        "broker_cpu_s": round(broker_cpu, 3),
        "timed_out": any(g.timed_out for g in got),
        **tally,
    }
    if "kafka_cpu_s" in cpu0:
        out["kafka_cpu_s"] = round(cpu1["kafka_cpu_s"] - cpu0["kafka_cpu_s"], 3)
    return out


def run_reconnect(broker: Broker, args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    """``reconnect_1000``: sessions with messages waiting all reconnect at once."""
    n, k = args.reconnect_sessions, args.reconnect_messages
    ids = gen.device_ids(f"rc-{run_id}", n)
    create_s, _ = create_sessions(broker, ids, args.sessions_procs, 300.0)
    pub_s = publish_each(broker, [gen.device_topic(c) for c in ids], k, args, 120.0)
    time.sleep(0.5)
    out = reconnect_all(broker, ids, k, args.sessions_procs, args.reconnect_deadline)
    out["create_s"] = round(create_s, 3)
    out["publish_s"] = round(pub_s, 3)
    return out
