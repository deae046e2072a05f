"""Bayou benchmark harness: ``python -m benchmarks.run`` (``make bench``).

Runs each scenario against a private mosquitto and a Bayou ingress node on the embedded Kafka,
interleaved, and reports messages/s, messages per broker CPU-second, latency percentiles and the
Bayou/mosquitto ratio per broker CPU-second. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import array
import json
import multiprocessing as mp
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks import agent_bench, fleet, latency
from benchmarks.brokers import Bayou, Broker, BrokerError, Mosquitto, nofile_limits
from benchmarks.load import WorkerParams, WorkerResult, worker_main
from benchmarks.procs import expect_reports
from benchmarks.stats import medians

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    qos: int
    with_subscriber: bool
    kind: str = "pubsub"  # "pubsub", "fanout", "idle", "reconnect", "offline", "agent", "e2e"


SCENARIOS = [
    Scenario("qos0_pub_sub", "QoS 0 publisher -> subscriber", 0, True),
    Scenario("qos1_pub_sub", "QoS 1 publisher -> subscriber", 1, True),
    Scenario("qos1_puback", "QoS 1 publish -> PUBACK, no subscriber", 1, False),
    Scenario("fanout_1000", "one publisher -> 1,000 subscribers", 1, True, "fanout"),
    Scenario("qos2_pub_sub", "QoS 2 publisher -> subscriber", 2, True),
    Scenario("qos2_puback", "QoS 2 publish -> PUBCOMP, no subscriber", 2, False),
    Scenario("reconnect_1000", "1,000 persistent sessions reconnect at once", 1, True, "reconnect"),
    Scenario("idle_memory", "broker RSS per idle connection", 0, False, "idle"),
    # Last: on Bayou it restarts the ingress node.
    Scenario("offline_sessions", "broker RSS per offline persistent session", 1, False, "offline"),
    # Agent workers on their own embedded Kafka (benchmarks.agent_bench), after the brokers.
    Scenario("agent_count", "counting agent (table + changelog) vs hand loop", 0, False, "agent"),
    Scenario("agent_window_mean", "10 s tumbling mean, 10,000 devices", 0, False, "agent"),
    # Its own embedded Kafka, ingress and worker (benchmarks.latency), after the agents.
    Scenario("e2e_latency", "publish -> agent -> command at the device", 1, True, "e2e"),
]
# Scenarios also run against Bayou with --ingress-processes node processes ("bayou-<N>p").
MULTI_PROCESS_SCENARIOS = ("qos1_puback", "fanout_1000")
AGENT_SCENARIOS = ("agent_count", "agent_window_mean")
# Run only when named with --scenario.
OPT_IN_SCENARIOS: tuple[str, ...] = ()

console = Console(width=None if sys.stdout.isatty() else 132)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    ap.add_argument("--messages", type=int, default=200_000, help="messages per run (total)")
    ap.add_argument("--publishers", type=int, default=2, help="generator processes (1 pub + 1 sub)")
    ap.add_argument("--window", type=int, default=200, help="max in flight per publisher")
    ap.add_argument("--batch", type=int, default=50, help="PUBLISH packets per socket write")
    ap.add_argument("--payload", type=int, default=100, help="payload bytes (>= 16)")
    ap.add_argument("--rate", type=float, default=0.0, help="msg/s per publisher; 0 = unpaced")
    ap.add_argument("--warmup", type=int, default=2000, help="warm-up messages per publisher")
    ap.add_argument("--deadline", type=float, default=15.0, help="seconds before a run is cut")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs per scenario (median)")
    fan = ap.add_argument_group("fanout_1000")
    fan.add_argument("--subscribers", type=int, default=1000, help="subscriber connections")
    fan.add_argument("--fanout-messages", type=int, default=300, help="messages published per run")
    fan.add_argument("--fanout-qos", type=int, choices=[0, 1], default=1, help="pub and sub QoS")
    fan.add_argument(
        "--fanout-window", type=int, default=10, help="messages whose deliveries may be outstanding"
    )
    fan.add_argument("--fanout-procs", type=int, default=4, help="subscriber generator processes")
    fan.add_argument("--fanout-warmup", type=int, default=5, help="warm-up messages (not counted)")
    idle = ap.add_argument_group("idle_memory")
    idle.add_argument("--idle-connections", type=int, default=10_000, help="idle clients")
    idle.add_argument("--idle-procs", type=int, default=4, help="generator processes holding them")
    idle.add_argument("--idle-keepalive", type=int, default=3600, help="CONNECT keep-alive, s")
    idle.add_argument("--idle-settle", type=float, default=2.0, help="s to wait before reading RSS")
    idle.add_argument("--idle-repeat", type=int, default=1, help="runs per broker")
    ses = ap.add_argument_group("offline_sessions and reconnect_1000")
    ses.add_argument("--sessions", type=int, default=10_000, help="offline persistent sessions")
    ses.add_argument("--sessions-procs", type=int, default=4, help="generator processes")
    ses.add_argument(
        "--sessions-sample", type=int, default=200, help="offline sessions reconnected to check"
    )
    ses.add_argument("--sessions-settle", type=float, default=2.0, help="s before each RSS reading")
    ses.add_argument("--reconnect-sessions", type=int, default=1000, help="sessions reconnecting")
    ses.add_argument(
        "--reconnect-messages", type=int, default=5, help="QoS 1 messages waiting per session"
    )
    ses.add_argument(
        "--reconnect-deadline", type=float, default=30.0, help="s before a reconnect run is cut"
    )
    ses.add_argument("--sessions-repeat", type=int, default=1, help="runs per broker")
    ag = ap.add_argument_group("agent_count and agent_window_mean")
    ag.add_argument("--agent-records", type=int, default=200_000, help="input records per run")
    ag.add_argument("--agent-devices", type=int, default=1000, help="agent_count: device keys")
    ag.add_argument(
        "--window-devices", type=int, default=10_000, help="agent_window_mean: device keys"
    )
    ag.add_argument("--agent-repeat", type=int, default=3, help="interleaved runs per side")
    ag.add_argument("--agent-deadline", type=float, default=120.0, help="s before a run is cut")
    ag.add_argument(
        "--faust-records",
        type=int,
        default=20_000,
        help="agent_count: records for the stock faust-streaming side (run once); 0 = skip it",
    )
    e2e = ap.add_argument_group("e2e_latency")
    e2e.add_argument("--e2e-rate", type=float, default=1000.0, help="readings/s in all, paced")
    e2e.add_argument("--e2e-seconds", type=float, default=15.0, help="measured seconds per run")
    e2e.add_argument("--e2e-warmup", type=float, default=3.0, help="warm-up seconds (not counted)")
    e2e.add_argument("--e2e-devices", type=int, default=20, help="device connections")
    e2e.add_argument(
        "--e2e-drain", type=float, default=10.0, help="s to wait for the last commands"
    )
    e2e.add_argument("--e2e-repeat", type=int, default=1, help="runs, each on a fresh stack")
    ap.add_argument(
        "--ingress-processes",
        type=int,
        default=0,
        help="also run qos1_puback and fanout_1000 against Bayou with this many node processes "
        "(BAYOU_INGRESS_PROCESSES; broker 'bayou-<N>p'); 0 or 1 = not (the default)",
    )
    ap.add_argument(
        "--only", choices=["mosquitto", "bayou"], default=None, help="run one broker only"
    )
    ap.add_argument(
        "--scenario",
        action="append",
        choices=[s.name for s in SCENARIOS],
        help="run only these scenarios (repeatable); default: all but agent_window_mean",
    )
    ap.add_argument(
        "--bayou-max-inflight",
        type=int,
        default=1000,
        help="BAYOU_MAX_INFLIGHT_MESSAGES for the Bayou nodes (0 = Bayou's default, 100); "
        "above --window, like mosquitto's max_inflight_messages 0, so no client falls back to "
        "catch-up from Kafka",
    )
    ap.add_argument(
        "--mosquitto-nodelay",
        action="store_true",
        help="set_tcp_nodelay true for mosquitto (default: stock, Nagle on)",
    )
    ap.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    args = ap.parse_args(argv)
    if not 1 <= args.window < 65535:
        ap.error("--window must be between 1 and 65534 (QoS 1 packet ids)")
    if args.payload < 16:
        ap.error("--payload must be at least 16 bytes (timestamp + sequence)")
    if args.messages < args.publishers:
        ap.error("--messages must be at least --publishers")
    if not 1 <= args.fanout_procs <= args.subscribers:
        ap.error("--fanout-procs must be between 1 and --subscribers")
    if not 1 <= args.idle_procs <= args.idle_connections:
        ap.error("--idle-procs must be between 1 and --idle-connections")
    if args.fanout_window < 1 or args.fanout_messages < 1:
        ap.error("--fanout-window and --fanout-messages must be at least 1")
    if not 1 <= args.sessions_procs <= min(args.sessions, args.reconnect_sessions):
        ap.error("--sessions-procs must be between 1 and --sessions / --reconnect-sessions")
    if not 0 <= args.sessions_sample <= args.sessions:
        ap.error("--sessions-sample must be between 0 and --sessions")
    if args.reconnect_messages < 1:
        ap.error("--reconnect-messages must be at least 1")
    if args.ingress_processes < 0:
        ap.error("--ingress-processes must not be negative")
    if args.agent_records < 1 or args.agent_repeat < 1:
        ap.error("--agent-records and --agent-repeat must be at least 1")
    if not 1 <= args.agent_devices <= args.agent_records:
        ap.error("--agent-devices must be between 1 and --agent-records")
    if args.e2e_rate <= 0 or args.e2e_seconds <= 0 or args.e2e_warmup < 0 or args.e2e_drain < 0:
        ap.error("--e2e-rate and --e2e-seconds must be positive, --e2e-warmup/--e2e-drain >= 0")
    if args.e2e_devices < 1 or args.e2e_repeat < 1:
        ap.error("--e2e-devices and --e2e-repeat must be at least 1")
    if not args.scenario or "agent_window_mean" in args.scenario:
        if not 1 <= args.window_devices <= args.agent_records:
            ap.error("--window-devices must be between 1 and --agent-records")
    return args


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_mib": mem_kib // 1024,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
    }


def _percentile(sorted_vals: list[int], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    idx = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return sorted_vals[idx] / 1e6


def run_once(broker: Broker, sc: Scenario, args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    """One scenario against one broker: start the generator processes, measure, collect."""
    ctx = mp.get_context("fork")
    results: mp.Queue[Any] = ctx.Queue()
    start = ctx.Event()
    n = args.publishers
    per = [args.messages // n + (1 if i < args.messages % n else 0) for i in range(n)]
    params = [
        WorkerParams(
            index=i,
            host="127.0.0.1",
            port=broker.port,
            topic=f"bench/{run_id}/{i}",
            qos=sc.qos,
            with_subscriber=sc.with_subscriber,
            messages=per[i],
            window=args.window,
            batch=args.batch,
            payload_size=args.payload,
            deadline_s=args.deadline,
            warmup=args.warmup,
            rate=args.rate,
            client_prefix=f"bench-{run_id}",
        )
        for i in range(n)
    ]
    procs = [ctx.Process(target=worker_main, args=(p, results, start), daemon=True) for p in params]
    for proc in procs:
        proc.start()
    try:
        ready = 0
        while ready < n:
            kind, idx, payload = results.get(timeout=60.0)
            if kind == "error":
                raise RuntimeError(f"generator {idx} failed before the run: {payload}")
            ready += 1
        nodes0 = _node_cpu(broker)
        cpu0 = broker.cpu()
        t0 = time.monotonic()
        start.set()
        got: list[WorkerResult] = []
        while len(got) < n:
            kind, idx, payload = results.get(timeout=args.deadline + 30.0)
            if kind == "error":
                raise RuntimeError(f"generator {idx} failed: {payload}")
            got.append(payload)
        wall = time.monotonic() - t0
        cpu1 = broker.cpu()
        nodes1 = _node_cpu(broker)
    except queue.Empty:
        raise RuntimeError("generator processes did not report in time") from None
    finally:
        start.set()
        for proc in procs:
            proc.join(5.0)
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, 9)
                proc.join()
    lat: list[int] = []
    for r in got:
        a = array.array("q")
        a.frombytes(r.latencies_ns)
        lat.extend(a)
    lat.sort()
    completed = sum(r.completed for r in got)
    sent = sum(r.sent for r in got)
    span_s = (max(r.t_end_ns for r in got) - min(r.t_start_ns for r in got)) / 1e9
    broker_cpu = cpu1["broker_cpu_s"] - cpu0["broker_cpu_s"]
    out: dict[str, Any] = {
        "sent": sent,
        "completed": completed,
        "lost_or_cut": sent - completed,
        "seconds": round(span_s, 3),
        "wall_s": round(wall, 3),
        "msgs_per_s": round(completed / span_s, 1) if span_s > 0 else 0.0,
        "broker_cpu_s": round(broker_cpu, 3),
        "msgs_per_broker_cpu_s": round(completed / broker_cpu, 1) if broker_cpu > 0 else None,
        "p50_ms": round(_percentile(lat, 0.50), 3),
        "p99_ms": round(_percentile(lat, 0.99), 3),
        "max_ms": round(lat[-1] / 1e6, 3) if lat else None,
        "stalled": any(r.stalled for r in got),
        "timed_out": any(r.timed_out for r in got),
    }
    if nodes0 is not None and nodes1 is not None:
        out["process_cpu_s"] = process_cpu_deltas(nodes0, nodes1)
    if "kafka_cpu_s" in cpu0:
        kafka_cpu = cpu1["kafka_cpu_s"] - cpu0["kafka_cpu_s"]
        out["kafka_cpu_s"] = round(kafka_cpu, 3)
        total = broker_cpu + kafka_cpu
        out["msgs_per_cpu_s_incl_kafka"] = round(completed / total, 1) if total > 0 else None
    return out


def _node_cpu(broker: Broker) -> dict[int, float] | None:
    """CPU seconds per process of a multi-process Bayou (parent and nodes), else None."""
    if isinstance(broker, Bayou) and broker.node_processes > 1:
        return broker.node_cpu_s()
    return None


def process_cpu_deltas(before: dict[int, float], after: dict[int, float]) -> list[float]:
    """CPU seconds each process spent between two readings, by pid order (the parent first).

    A process that appeared meanwhile counts from 0; one that vanished is left out.
    """
    return [round(after[pid] - before.get(pid, 0.0), 3) for pid in sorted(after)]


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    """``numerator / denominator`` rounded; None when either is missing or the denominator 0."""
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)


def _kill_all(procs: list[Any]) -> None:
    """Join generator processes; kill (by pid) any still alive after 5 s."""
    for proc in procs:
        proc.join(5.0)
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, 9)
            proc.join()


def run_fanout(broker: Broker, args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    """One publisher, ``--subscribers`` subscribers on one topic, in generator processes."""
    ctx = mp.get_context("fork")
    results: mp.Queue[Any] = ctx.Queue()  # the subscriber processes
    pub_results: mp.Queue[Any] = ctx.Queue()  # the publisher process
    warm, start, stop = ctx.Event(), ctx.Event(), ctx.Event()
    k = args.fanout_procs
    counters = ctx.RawArray("q", k)
    p = fleet.FanoutParams(
        host="127.0.0.1",
        port=broker.port,
        topic=f"bench/{run_id}/fan",
        qos=args.fanout_qos,
        subscribers=args.subscribers,
        sub_procs=k,
        messages=args.fanout_messages,
        warmup=args.fanout_warmup,
        window=args.fanout_window,
        batch=args.fanout_window,
        payload_size=args.payload,
        deadline_s=args.deadline,
        client_prefix=f"bench-{run_id}",
    )
    procs = [
        ctx.Process(
            target=fleet.fanout_subscriber_main,
            args=(p, i, n, counters, results, stop),
            daemon=True,
        )
        for i, n in enumerate(fleet.shares(args.subscribers, k))
    ]
    procs.append(
        ctx.Process(
            target=fleet.fanout_publisher_main,
            args=(p, counters, pub_results, warm, start),
            daemon=True,
        )
    )
    for proc in procs:
        proc.start()
    try:
        t_conn = time.monotonic()
        expect_reports(results, "ready", k, 120.0, "connected and subscribed")
        expect_reports(pub_results, "ready", 1, 30.0, "publisher connected")
        connect_s = time.monotonic() - t_conn
        warm.set()
        expect_reports(pub_results, "warm", 1, 60.0, "warm-up")
        nodes0 = _node_cpu(broker)
        cpu0 = broker.cpu()
        start.set()
        done = expect_reports(pub_results, "result", 1, args.deadline + 30.0, "publisher done")
        pub: fleet.PublisherResult = done[-1]
        cpu1 = broker.cpu()
        nodes1 = _node_cpu(broker)
        stop.set()
        subs: list[fleet.SubscriberResult] = list(
            expect_reports(results, "result", k, 60.0, "subscriber results").values()
        )
    finally:
        warm.set()
        start.set()
        stop.set()
        _kill_all(procs)
    lat = array.array("q")
    for r in subs:
        a = array.array("q")
        a.frombytes(r.latencies_ns)
        lat.extend(a)
    lat_sorted = sorted(lat)
    delivered = sum(r.delivered for r in subs)
    expected = pub.sent * args.subscribers
    span_s = (pub.t_end_ns - pub.t_start_ns) / 1e9
    broker_cpu = cpu1["broker_cpu_s"] - cpu0["broker_cpu_s"]
    out: dict[str, Any] = {
        "messages": pub.sent,
        "subscribers": args.subscribers,
        "qos": args.fanout_qos,
        "publisher_acks": pub.acks,
        "sent": expected,  # deliveries expected: messages x subscribers
        "completed": delivered,
        "lost_or_cut": expected - delivered,
        "seconds": round(span_s, 3),
        "connect_s": round(connect_s, 3),
        "msgs_per_s": round(delivered / span_s, 1) if span_s > 0 else 0.0,
        "broker_cpu_s": round(broker_cpu, 3),
        "msgs_per_broker_cpu_s": round(delivered / broker_cpu, 1) if broker_cpu > 0 else None,
        "p50_ms": round(_percentile(lat_sorted, 0.50), 3),
        "p99_ms": round(_percentile(lat_sorted, 0.99), 3),
        "max_ms": round(lat_sorted[-1] / 1e6, 3) if lat_sorted else None,
        "stalled": pub.stalled,
        "timed_out": pub.timed_out,
    }
    if nodes0 is not None and nodes1 is not None:
        out["process_cpu_s"] = process_cpu_deltas(nodes0, nodes1)
    if "kafka_cpu_s" in cpu0:
        kafka_cpu = cpu1["kafka_cpu_s"] - cpu0["kafka_cpu_s"]
        out["kafka_cpu_s"] = round(kafka_cpu, 3)
        total = broker_cpu + kafka_cpu
        out["msgs_per_cpu_s_incl_kafka"] = round(delivered / total, 1) if total > 0 else None
    return out


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
            target=fleet.idle_worker_main,
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
        for i, count in enumerate(fleet.shares(n, args.idle_procs))
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
        _kill_all(procs)
    per = fleet.kib_per_connection(rss_before, rss_connected, connected)
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


def _spawn(ctx: Any, target: Any, arg_lists: list[tuple[Any, ...]]) -> list[Any]:
    procs = [ctx.Process(target=target, args=a, daemon=True) for a in arg_lists]
    for proc in procs:
        proc.start()
    return procs


def _create_sessions(
    broker: Broker, ids: list[str], nprocs: int, timeout: float
) -> tuple[float, list[Any]]:
    """Persistent sessions for ``ids`` (each subscribed to its own topic), then disconnected."""
    ctx = mp.get_context("fork")
    results: mp.Queue[Any] = ctx.Queue()
    parts = fleet.shares(len(ids), nprocs)
    starts = [sum(parts[:i]) for i in range(nprocs)]
    t0 = time.monotonic()
    procs = _spawn(
        ctx,
        fleet.create_sessions_main,
        [
            ("127.0.0.1", broker.port, i, ids[starts[i] : starts[i] + parts[i]], results)
            for i in range(nprocs)
        ],
    )
    try:
        expect_reports(results, "created", nprocs, timeout, "sessions created")
    finally:
        _kill_all(procs)
    return time.monotonic() - t0, procs


def _publish_each(
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
    procs = _spawn(ctx, fleet.publish_each_main, [(*args_, results, first_number)])
    try:
        got = expect_reports(
            results, "published", 1, timeout + 10.0, "published to offline sessions"
        )
    finally:
        _kill_all(procs)
    return float(got[0][1])


def _reconnect(
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
    parts = fleet.shares(len(ids), nprocs)
    starts = [sum(parts[:i]) for i in range(nprocs)]
    procs = _spawn(
        ctx,
        fleet.reconnect_main,
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
        got: list[fleet.ReconnectResult] = list(
            expect_reports(
                results, "result", nprocs, deadline_s + 60.0, "reconnect results"
            ).values()
        )
        cpu1 = broker.cpu()
    finally:
        start.set()
        _kill_all(procs)
    tally = fleet.tally_sessions([r for g in got for r in g.received], expected)
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
        "session_p50_s": round(_percentile(done_ns, 0.5) / 1e3, 3) if done_ns else None,
        "session_p99_s": round(_percentile(done_ns, 0.99) / 1e3, 3) if done_ns else None,
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
    ids = fleet.device_ids(f"rc-{run_id}", n)
    create_s, _ = _create_sessions(broker, ids, args.sessions_procs, 300.0)
    pub_s = _publish_each(broker, [fleet.device_topic(c) for c in ids], k, args, 120.0)
    time.sleep(0.5)
    out = _reconnect(broker, ids, k, args.sessions_procs, args.reconnect_deadline)
    out["create_s"] = round(create_s, 3)
    out["publish_s"] = round(pub_s, 3)
    return out


def run_offline(broker: Broker, args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    """``offline_sessions``: RSS per offline persistent session, and with a message queued each.

    Starts from a fresh broker process (mosquitto restarted; Bayou: the ingress restarted on
    the same Kafka), so memory earlier scenarios freed does not hide what the sessions cost.
    """
    n = args.sessions
    settle = args.sessions_settle
    ids = fleet.device_ids(f"off-{run_id}", n)
    first_restart_s = broker.restart()
    time.sleep(settle)
    rss_before = broker.rss_kib()
    create_s, _ = _create_sessions(broker, ids, args.sessions_procs, 600.0)
    time.sleep(settle)
    rss_offline = broker.rss_kib()
    cpu0 = broker.cpu()
    pub_s = _publish_each(broker, [fleet.device_topic(c) for c in ids], 1, args, 300.0)
    cpu1 = broker.cpu()
    time.sleep(settle)
    rss_queued = broker.rss_kib()
    # A second message each: growth that repeats is per message; what does not was one-off
    # (allocator arenas, the producer's buffers warming up).
    _publish_each(broker, [fleet.device_topic(c) for c in ids], 1, args, 300.0, first_number=1)
    time.sleep(settle)
    rss_queued2 = broker.rss_kib()
    out: dict[str, Any] = {
        "sessions": n,
        "fresh_start_s": round(first_restart_s, 3),
        "create_s": round(create_s, 3),
        "sessions_per_s": round(n / create_s, 1) if create_s > 0 else None,
        "rss_before_kib": rss_before,
        "rss_offline_kib": rss_offline,
        "kib_per_offline_session": round((rss_offline - rss_before) / n, 3),
        "publish_s": round(pub_s, 3),
        "publish_broker_cpu_s": round(cpu1["broker_cpu_s"] - cpu0["broker_cpu_s"], 3),
        "rss_queued_kib": rss_queued,
        "kib_per_queued_message": round((rss_queued - rss_offline) / n, 3),
        "rss_queued_2nd_kib": rss_queued2,
        "kib_per_queued_message_2nd": round((rss_queued2 - rss_queued) / n, 3),
    }
    if isinstance(broker, Bayou):
        # A fresh node: what the sessions cost once materialised from bayou.sessions alone.
        out["restart_s"] = round(broker.restart_ingress(), 3)
        time.sleep(settle)
        rss_restarted = broker.rss_kib()
        out["rss_restarted_kib"] = rss_restarted
        out["kib_per_session_after_restart"] = round((rss_restarted - rss_before) / n, 3)
    if args.sessions_sample:
        # Do the offline devices get their message? (On Bayou: from Kafka, after the restart.)
        sample = _reconnect(broker, ids[: args.sessions_sample], 2, 1, args.reconnect_deadline)
        out["sample"] = {
            k: sample[k]
            for k in (
                "sessions",
                "complete",
                "missing",
                "duplicates",
                "unexpected",
                "seconds",
                "session_present",
            )
        }
    return out


def summarize_numeric(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric figure over the runs (``sample`` counts summed); runs kept."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        vals = [r[key] for r in runs if isinstance(r.get(key), int | float)]
        if vals and not isinstance(vals[0], bool):
            out[key] = round(statistics.median(vals), 3)
        elif isinstance(runs[0][key], bool):
            out[key] = any(r.get(key) for r in runs)
    samples = [r["sample"] for r in runs if isinstance(r.get("sample"), dict)]
    if samples:
        out["sample"] = {k: sum(x[k] or 0 for x in samples) for k in samples[0] if k != "seconds"}
    out["runs"] = runs
    return out


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


_MEDIAN_KEYS = [
    "msgs_per_s",
    "msgs_per_broker_cpu_s",
    "broker_cpu_s",
    "kafka_cpu_s",
    "msgs_per_cpu_s_incl_kafka",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "seconds",
]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each figure over the repeats; the raw runs are kept alongside."""
    out: dict[str, Any] = dict(medians(runs, _MEDIAN_KEYS))
    out["sent"] = sum(r["sent"] for r in runs)
    out["completed"] = sum(r["completed"] for r in runs)
    out["stalled_runs"] = sum(1 for r in runs if r["stalled"])
    out["time_bounded_runs"] = sum(1 for r in runs if r["timed_out"])
    out["runs"] = runs
    return out


def _fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def print_table(report: dict[str, Any]) -> None:
    agent = [sc for sc in report["scenarios"] if sc["name"] in AGENT_SCENARIOS]
    e2e = [sc for sc in report["scenarios"] if sc["name"] == "e2e_latency"]
    if len(agent) + len(e2e) == len(report["scenarios"]):
        if agent:
            print_agent_table(agent)
        for sc in e2e:
            latency.print_e2e_table(sc)
        return
    table = Table(title="Bayou vs mosquitto (medians; 100-byte payloads)")
    for col, justify in [
        ("scenario", "left"),
        ("broker", "left"),
        ("msg/s", "right"),
        ("msg per broker CPU-s", "right"),
        ("broker CPU s", "right"),
        ("kafka CPU s", "right"),
        ("p50 ms", "right"),
        ("p99 ms", "right"),
        ("done/sent", "right"),
        ("ratio", "right"),
    ]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    idle = [sc for sc in report["scenarios"] if sc["name"] == "idle_memory"]
    offline = [sc for sc in report["scenarios"] if sc["name"] == "offline_sessions"]
    reconnect = [sc for sc in report["scenarios"] if sc["name"] == "reconnect_1000"]
    for sc in report["scenarios"]:
        skip = ("idle_memory", "offline_sessions", "reconnect_1000", "e2e_latency")
        if sc["name"] in (*skip, *AGENT_SCENARIOS):
            continue
        first = True
        for name in [k for k in sc if k == "mosquitto" or k.startswith("bayou")]:
            r = sc.get(name)
            if r is None:
                continue
            shown = sc.get("ratio") if name == "bayou" else sc.get(f"ratio_{name}")
            table.add_row(
                sc["name"] if first else "",
                name,
                _fmt(r.get("msgs_per_s")),
                _fmt(r.get("msgs_per_broker_cpu_s")),
                _fmt(r.get("broker_cpu_s"), 2),
                _fmt(r.get("kafka_cpu_s"), 2),
                _fmt(r.get("p50_ms"), 2),
                _fmt(r.get("p99_ms"), 2),
                f"{r['completed']:,}/{r['sent']:,}",
                _fmt(shown, 3),
            )
            first = False
    console.print(table)
    console.print(
        "ratio = Bayou msg per ingress CPU-second / mosquitto msg per broker CPU-second "
        "(target for qos1_puback vs mosquitto qos1_pub_sub: >= 0.5, DESIGN.md section 9); "
        "fanout_1000: msg = deliveries (target ratio >= 0.5); bayou-<N>p: N node processes, "
        "CPU summed over them and their parent (per-process figure), msg/s = whole machine"
    )
    if idle:
        print_idle_table(idle[0])
    if offline:
        print_offline_table(offline[0])
    if reconnect:
        print_reconnect_table(reconnect[0])
    if agent:
        print_agent_table(agent)
    for sc in e2e:
        latency.print_e2e_table(sc)


def print_agent_table(entries: list[dict[str, Any]]) -> None:
    table = Table(title="Agent workers vs a hand-written aiokafka loop (medians)")
    cols = [
        "scenario",
        "side",
        "records/s",
        "records per CPU-s",
        "seconds",
        "CPU s",
        "join s",
        "windows",
        "ratio",
    ]
    for col in cols:
        table.add_column(col, justify="left" if col in ("scenario", "side") else "right")
    for sc in entries:
        first = True
        for side in ("hand_loop", "worker", "faust"):
            r = sc.get(side)
            if r is None:
                continue
            side_ratio = {"worker": sc.get("ratio"), "faust": sc.get("faust_ratio")}.get(side)
            table.add_row(
                sc["name"] if first else "",
                {"worker": "bayou worker", "faust": "stock faust (once)"}.get(side, "hand loop"),
                _fmt(r.get("records_per_s")),
                _fmt(r.get("records_per_cpu_s")),
                _fmt(r.get("seconds"), 2),
                _fmt(r.get("cpu_s"), 2),
                _fmt(r.get("join_s"), 2),
                _fmt(r.get("windows_emitted")) if sc["name"] == "agent_window_mean" else "",
                _fmt(side_ratio, 3),
            )
            first = False
    console.print(table)
    console.print(
        "ratio = records/s / hand loop records/s, same data, same run; target for the bayou "
        "worker in agent_count >= 0.8 (DESIGN.md section 9); group join excluded from all"
    )


def print_offline_table(sc: dict[str, Any]) -> None:
    table = Table(title="Offline persistent sessions: broker RSS (KiB; Bayou = ingress process)")
    cols = [
        "broker",
        "sessions",
        "RSS before",
        "RSS offline",
        "KiB/session",
        "RSS +1 msg each",
        "KiB/queued msg",
        "RSS +2 msgs each",
        "KiB/queued msg (2nd)",
        "restarted node",
        "KiB/session (restart)",
        "sample got msg",
        "ratio",
    ]
    for col in cols:
        table.add_column(col, justify="left" if col == "broker" else "right")
    for name in ("mosquitto", "bayou"):
        r = sc.get(name)
        if r is None:
            continue
        sample = r.get("sample") or {}
        table.add_row(
            name,
            _fmt(r.get("sessions")),
            _fmt(r.get("rss_before_kib")),
            _fmt(r.get("rss_offline_kib")),
            _fmt(r.get("kib_per_offline_session"), 2),
            _fmt(r.get("rss_queued_kib")),
            _fmt(r.get("kib_per_queued_message"), 2),
            _fmt(r.get("rss_queued_2nd_kib")),
            _fmt(r.get("kib_per_queued_message_2nd"), 2),
            _fmt(r.get("rss_restarted_kib")),
            _fmt(r.get("kib_per_session_after_restart"), 2),
            f"{sample.get('complete', 0):,}/{sample.get('sessions', 0):,}" if sample else "-",
            _fmt(sc.get("ratio"), 2) if name == "bayou" else "",
        )
    console.print(table)
    console.print(
        "ratio = Bayou KiB per offline session / mosquitto's (lower is better); target "
        "(DESIGN.md section 9, no broker memory beyond Kafka state): Bayou KiB per queued "
        "message <= 0.1 (messages stay in Kafka); mosquitto queues them in memory (reference)"
    )


def print_reconnect_table(sc: dict[str, Any]) -> None:
    table = Table(title="Persistent sessions reconnecting at once, messages waiting")
    cols = [
        "broker",
        "sessions",
        "msgs each",
        "seconds",
        "sessions/s",
        "msg/s",
        "all CONNACKed s",
        "p50 s",
        "p99 s",
        "broker CPU s",
        "kafka CPU s",
        "complete",
        "missing",
        "dup",
        "ratio",
    ]
    for col in cols:
        table.add_column(col, justify="left" if col == "broker" else "right")
    for name in ("mosquitto", "bayou"):
        r = sc.get(name)
        if r is None:
            continue
        table.add_row(
            name,
            _fmt(r.get("sessions")),
            _fmt(r.get("messages_per_session")),
            _fmt(r.get("seconds"), 2),
            _fmt(r.get("sessions_per_s")),
            _fmt(r.get("msgs_per_s")),
            _fmt(r.get("all_connacked_s"), 2),
            _fmt(r.get("session_p50_s"), 2),
            _fmt(r.get("session_p99_s"), 2),
            _fmt(r.get("broker_cpu_s"), 2),
            _fmt(r.get("kafka_cpu_s"), 2),
            _fmt(r.get("complete")),
            _fmt(r.get("missing")),
            _fmt(r.get("duplicates")),
            _fmt(sc.get("ratio"), 2) if name == "bayou" else "",
        )
    console.print(table)
    console.print(
        "ratio = mosquitto seconds / Bayou seconds until every session received and PUBACKed "
        "all its messages (> 1 = Bayou faster); no section 9 target"
    )


def print_idle_table(sc: dict[str, Any]) -> None:
    table = Table(title="Idle connections: broker RSS (KiB; Bayou = ingress process)")
    for col in [
        "broker",
        "clients",
        "RSS before",
        "RSS connected",
        "RSS after disconnect",
        "KiB per client",
        "connects/s",
        "ratio",
    ]:
        table.add_column(col, justify="left" if col == "broker" else "right")
    for name in ("mosquitto", "bayou"):
        r = sc.get(name)
        if r is None:
            continue
        table.add_row(
            name,
            _fmt(r.get("connections")),
            _fmt(r.get("rss_before_kib")),
            _fmt(r.get("rss_connected_kib")),
            _fmt(r.get("rss_after_disconnect_kib")),
            _fmt(r.get("kib_per_connection"), 2),
            _fmt(r.get("connects_per_s")),
            _fmt(sc.get("ratio"), 2) if name == "bayou" else "",
        )
    console.print(table)
    console.print(
        "ratio = Bayou KiB per idle client / mosquitto's (lower is better); "
        "target: Bayou under 4 KiB per idle client (DESIGN.md section 9)"
    )


def _broker_names(sc: Scenario, args: argparse.Namespace) -> list[str]:
    """The brokers a scenario runs against, in order."""
    names = [args.only] if args.only else ["mosquitto", "bayou"]
    if args.ingress_processes > 1 and sc.name in MULTI_PROCESS_SCENARIOS and "bayou" in names:
        names.append(f"bayou-{args.ingress_processes}p")
    return names


def _print_run(sc: Scenario, name: str, rep: int, repeats: int, r: dict[str, Any]) -> None:
    head = f"{sc.name:<16} {name:<9} run {rep + 1}/{repeats}: "
    if sc.kind == "idle":
        console.print(
            head + f"{r['connections']:,} idle clients, RSS "
            f"{r['rss_before_kib']:,} -> {r['rss_connected_kib']:,} -> "
            f"{r['rss_after_disconnect_kib']:,} KiB, "
            f"{_fmt(r['kib_per_connection'], 2)} KiB per connection"
        )
    elif sc.kind == "offline":
        console.print(
            head + f"{r['sessions']:,} offline sessions, RSS {r['rss_before_kib']:,} -> "
            f"{r['rss_offline_kib']:,} -> {r['rss_queued_kib']:,} KiB with a message each; "
            f"{r['kib_per_offline_session']:.2f} KiB/session, "
            f"{r['kib_per_queued_message']:.2f} then "
            f"{r['kib_per_queued_message_2nd']:.2f} KiB/queued message"
            + (
                f"; restarted node {_fmt(r.get('kib_per_session_after_restart'), 2)} KiB/session"
                if "rss_restarted_kib" in r
                else ""
            )
            + (
                f"; sample {r['sample']['complete']}/{r['sample']['sessions']} got it"
                if "sample" in r
                else ""
            )
        )
    elif sc.kind == "reconnect":
        console.print(
            head + f"{r['sessions']:,} sessions x {r['messages_per_session']} msgs: "
            f"{_fmt(r['seconds'], 2)} s, {_fmt(r['sessions_per_s'])} sessions/s, "
            f"complete {r['complete']:,}, missing {r['missing']:,}, "
            f"duplicates {r['duplicates']:,}, session present {r['session_present']:,}"
            + ("  (cut at --reconnect-deadline)" if r["timed_out"] else "")
        )
    else:
        console.print(
            head + f"{r['msgs_per_s']:>10,.0f} msg/s  "
            f"{_fmt(r['msgs_per_broker_cpu_s']):>10} msg/broker-CPU-s  "
            f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
            f"{r['completed']:,}/{r['sent']:,}"
            + (f"  per process CPU {r['process_cpu_s']}" if "process_cpu_s" in r else "")
            + ("  STALLED" if r["stalled"] else "")
            + ("  (stopped at --deadline)" if r["timed_out"] else "")
        )


def _entry(
    sc: Scenario, raw: dict[tuple[str, str], list[dict[str, Any]]], args: argparse.Namespace
) -> dict[str, Any]:
    """The JSON entry of one scenario: medians per broker, the ratio, the section 9 target."""
    entry: dict[str, Any] = {"name": sc.name, "title": sc.title}
    summ = {"idle": summarize_idle, "offline": summarize_numeric, "reconnect": summarize_numeric}
    for name in _broker_names(sc, argparse.Namespace(**{**vars(args), "only": None})):
        runs = raw.get((sc.name, name))
        entry[name] = summ.get(sc.kind, summarize)(runs) if runs else None
    m, b = entry["mosquitto"] or {}, entry["bayou"] or {}
    if sc.kind == "idle":
        entry["ratio"] = ratio(b.get("kib_per_connection"), m.get("kib_per_connection"))
        entry["ratio_means"] = "Bayou KiB per idle client / mosquitto's (lower is better)"
        entry["connections"] = args.idle_connections
        entry["target"] = {"bayou_kib_per_connection_below": 4.0}
    elif sc.kind == "offline":
        entry["ratio"] = ratio(b.get("kib_per_offline_session"), m.get("kib_per_offline_session"))
        entry["ratio_means"] = "Bayou KiB per offline session / mosquitto's (lower is better)"
        entry["queued_ratio"] = ratio(
            b.get("kib_per_queued_message"), m.get("kib_per_queued_message")
        )
        entry["sessions"] = args.sessions
        entry["queued_2nd_ratio"] = ratio(
            b.get("kib_per_queued_message_2nd"), m.get("kib_per_queued_message_2nd")
        )
        # Section 9: offline sessions cost no broker memory beyond their Kafka state. Messages
        # for them stay in Kafka: RSS growth per queued message within noise (0.1 KiB x 10,000
        # messages = 1 MiB), in both rounds of one message per offline session.
        entry["target"] = {"bayou_kib_per_queued_message_at_most": 0.1}
        qs = [b.get("kib_per_queued_message"), b.get("kib_per_queued_message_2nd")]
        entry["target_met"] = None if None in qs else all(q <= 0.1 for q in qs if q is not None)
    elif sc.kind == "reconnect":
        entry["ratio"] = ratio(m.get("seconds"), b.get("seconds"))
        entry["ratio_means"] = (
            "mosquitto seconds / Bayou seconds until every session has all its messages "
            "(higher is better for Bayou; > 1 = Bayou faster)"
        )
        entry["sessions"] = args.reconnect_sessions
        entry["messages_per_session"] = args.reconnect_messages
        entry["target"] = None  # no section 9 target
    else:
        entry["ratio"] = ratio(b.get("msgs_per_broker_cpu_s"), m.get("msgs_per_broker_cpu_s"))
        entry["ratio_means"] = "Bayou msg per ingress CPU-s / mosquitto msg per broker CPU-s"
        entry["target"] = None
        if sc.kind == "fanout":
            entry["qos"] = args.fanout_qos
            entry["subscribers"] = args.subscribers
            # Section 9: deliveries per broker CPU-second at least half of mosquitto's.
            entry["target"] = {"ratio_at_least": 0.5}
        for name in _broker_names(sc, argparse.Namespace(**{**vars(args), "only": None}))[2:]:
            v = entry.get(name) or {}
            # Per process: msg per CPU-second of all node processes (and their parent).
            entry[f"ratio_{name}"] = ratio(
                v.get("msgs_per_broker_cpu_s"), m.get("msgs_per_broker_cpu_s")
            )
            # Whole machine: wall-clock msg/s on the same 2 cores the generator shares.
            entry[f"whole_machine_ratio_{name}"] = ratio(v.get("msgs_per_s"), m.get("msgs_per_s"))
    return entry


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = [
        s
        for s in SCENARIOS
        if (s.name in args.scenario if args.scenario else s.name not in OPT_IN_SCENARIOS)
    ]
    # The agent scenarios need no MQTT broker: they run after the others, on their own Kafka.
    agent_scenarios = [s for s in scenarios if s.kind == "agent" and args.only != "mosquitto"]
    e2e_scenarios = [s for s in scenarios if s.kind == "e2e" and args.only != "mosquitto"]
    broker_scenarios = [s for s in scenarios if s.kind not in ("agent", "e2e")]
    wanted = [n for sc in broker_scenarios for n in _broker_names(sc, args)]
    errors: dict[str, str] = {}
    brokers: dict[str, Broker] = {}
    report: dict[str, Any] = {
        "machine": machine_info(),
        "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "brokers": {},
        "scenarios": [],
    }

    def start(name: str) -> Broker | None:
        if name in errors:
            return None
        broker: Broker
        if name == "mosquitto":
            broker = Mosquitto(workdir, args.mosquitto_nodelay)
        elif name == "bayou":
            broker = Bayou(workdir, 1, args.bayou_max_inflight)
        else:
            broker = Bayou(workdir, args.ingress_processes, args.bayou_max_inflight)
        console.print(f"starting {name} ...")
        try:
            broker.start()
        except (BrokerError, OSError, TimeoutError) as exc:
            errors[name] = str(exc)
            console.print(f"[bold red]{name} unavailable:[/] {exc}")
            return None
        brokers[name] = broker
        console.print(f"{name} listening on 127.0.0.1:{broker.port}")
        return broker

    def stop(name: str) -> None:
        broker = brokers.pop(name, None)
        if broker is not None:
            report["brokers"][name] = broker.describe()
            broker.stop()

    with tempfile.TemporaryDirectory(prefix="bayou-bench-") as tmp:
        workdir = Path(tmp)
        t_begin = time.monotonic()
        try:
            # The multi-process variant starts before its first scenario and stops after its
            # last, so its idle Kafka and nodes do not share the cores with other scenarios.
            for name in dict.fromkeys(wanted):
                if name in ("mosquitto", "bayou"):
                    start(name)
            raw: dict[tuple[str, str], list[dict[str, Any]]] = {}
            # idle_memory first: it measures what the first connections cost a fresh broker,
            # before other scenarios leave freed memory behind for it to reuse.
            order = sorted(broker_scenarios, key=lambda s: s.kind != "idle")
            for pos, sc in enumerate(order):
                names = _broker_names(sc, args)
                for name in names:
                    if name not in brokers:
                        start(name)
                repeats = {
                    "idle": args.idle_repeat,
                    "offline": args.sessions_repeat,
                    "reconnect": args.sessions_repeat,
                }.get(sc.kind, args.repeat)
                for rep in range(repeats):
                    # Interleave, alternating which broker goes first.
                    live = [brokers[n] for n in names if n in brokers]
                    for broker in live if rep % 2 == 0 else list(reversed(live)):
                        run_id = f"{sc.name}-{broker.name}-{rep}-{os.getpid()}"
                        try:
                            if sc.kind == "idle":
                                r = run_idle(broker, args, run_id)
                            elif sc.kind == "fanout":
                                r = run_fanout(broker, args, run_id)
                            elif sc.kind == "offline":
                                r = run_offline(broker, args, run_id)
                            elif sc.kind == "reconnect":
                                r = run_reconnect(broker, args, run_id)
                            else:
                                r = run_once(broker, sc, args, run_id)
                        except (RuntimeError, OSError, BrokerError) as exc:
                            console.print(f"[red]{sc.name} on {broker.name} failed:[/] {exc}")
                            errors[f"{sc.name}/{broker.name}/{rep}"] = str(exc)
                            continue
                        raw.setdefault((sc.name, broker.name), []).append(r)
                        _print_run(sc, broker.name, rep, repeats, r)
                later = {n for s in order[pos + 1 :] for n in _broker_names(s, args)}
                for name in [n for n in brokers if n not in later and n.endswith("p")]:
                    stop(name)
        finally:
            for name in list(brokers):
                stop(name)
        agent_entries = {
            sc.name: agent_bench.run_agent_scenario(sc.name, sc.title, args, workdir, errors)
            for sc in agent_scenarios
        }
        e2e_entries = {
            sc.name: latency.run_e2e_scenario(sc.title, args, workdir, errors)
            for sc in e2e_scenarios
        }
        report["duration_s"] = round(time.monotonic() - t_begin, 1)
    for sc in scenarios:
        if sc.kind == "agent":
            if sc.name in agent_entries:
                report["scenarios"].append(agent_entries[sc.name])
        elif sc.kind == "e2e":
            if sc.name in e2e_entries:
                report["scenarios"].append(e2e_entries[sc.name])
        else:
            report["scenarios"].append(_entry(sc, raw, args))
    # The section 9 ingest target compares Bayou's QoS 1 publish->PUBACK with mosquitto's QoS 1
    # publisher->subscriber figure (per ingress process: messages per CPU-second).
    by_name = {s["name"]: s for s in report["scenarios"]}
    ing, ref = by_name.get("qos1_puback"), by_name.get("qos1_pub_sub")
    if ing and ref and ref["mosquitto"]:
        mo = ref["mosquitto"].get("msgs_per_broker_cpu_s")
        for name in [k for k in ing if k.startswith("bayou") and ing[k]]:
            got = ratio(ing[name].get("msgs_per_broker_cpu_s"), mo)
            if got is not None:
                key = "ingest_target" if name == "bayou" else f"ingest_target_{name}"
                report[key] = {"ratio": got, "target": 0.5}
    report["errors"] = errors
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    for key in [k for k in report if k.startswith("ingest_target")]:
        t = report[key]
        console.print(f"{key} (section 9): ratio {t['ratio']:.3f}, target >= {t['target']}")
    console.print(f"results written to {args.output}")
    if errors:
        console.print(f"[bold red]{len(errors)} error(s)[/]: " + "; ".join(sorted(errors)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
