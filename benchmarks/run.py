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

from benchmarks import fleet
from benchmarks.brokers import Bayou, Broker, BrokerError, Mosquitto, nofile_limits
from benchmarks.load import WorkerParams, WorkerResult, worker_main

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    qos: int
    with_subscriber: bool
    kind: str = "pubsub"  # "pubsub", "fanout" or "idle"


SCENARIOS = [
    Scenario("qos0_pub_sub", "QoS 0 publisher -> subscriber", 0, True),
    Scenario("qos1_pub_sub", "QoS 1 publisher -> subscriber", 1, True),
    Scenario("qos1_puback", "QoS 1 publish -> PUBACK, no subscriber", 1, False),
    Scenario("fanout_1000", "one publisher -> 1,000 subscribers", 1, True, "fanout"),
    Scenario("idle_memory", "broker RSS per idle connection", 0, False, "idle"),
]

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
    ap.add_argument(
        "--only", choices=["mosquitto", "bayou"], default=None, help="run one broker only"
    )
    ap.add_argument(
        "--scenario",
        action="append",
        choices=[s.name for s in SCENARIOS],
        help="run only these scenarios (repeatable)",
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
    if "kafka_cpu_s" in cpu0:
        kafka_cpu = cpu1["kafka_cpu_s"] - cpu0["kafka_cpu_s"]
        out["kafka_cpu_s"] = round(kafka_cpu, 3)
        total = broker_cpu + kafka_cpu
        out["msgs_per_cpu_s_incl_kafka"] = round(completed / total, 1) if total > 0 else None
    return out


def _kill_all(procs: list[Any]) -> None:
    """Join generator processes; kill (by pid) any still alive after 5 s."""
    for proc in procs:
        proc.join(5.0)
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, 9)
            proc.join()


def _expect(results: Any, kind: str, n: int, timeout: float, what: str) -> dict[int, Any]:
    """Wait for ``n`` messages of ``kind`` from generator processes; raise on an error report."""
    got: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"generator processes did not report {what} in {timeout:.0f}s")
        try:
            k, idx, payload = results.get(timeout=left)
        except queue.Empty:
            continue
        if k == "error":
            raise RuntimeError(f"generator {idx} failed ({what}): {payload}")
        if k == kind:
            got[idx] = payload
    return got


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
        _expect(results, "ready", k, 120.0, "connected and subscribed")
        _expect(pub_results, "ready", 1, 30.0, "publisher connected")
        connect_s = time.monotonic() - t_conn
        warm.set()
        _expect(pub_results, "warm", 1, 60.0, "warm-up")
        cpu0 = broker.cpu()
        start.set()
        done = _expect(pub_results, "result", 1, args.deadline + 30.0, "publisher done")
        pub: fleet.PublisherResult = done[-1]
        cpu1 = broker.cpu()
        stop.set()
        subs: list[fleet.SubscriberResult] = list(
            _expect(results, "result", k, 60.0, "subscriber results").values()
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
        conn = _expect(results, "connected", len(procs), 300.0, "connected")
        connect_s = time.monotonic() - t0
        connected = sum(c for c, _s in conn.values())
        time.sleep(args.idle_settle)
        rss_connected = broker.rss_kib()
        cpu_idle0 = broker.cpu()["broker_cpu_s"]
        time.sleep(1.0)
        cpu_idle = broker.cpu()["broker_cpu_s"] - cpu_idle0
        disconnect.set()
        dropped = sum(_expect(results, "closed", len(procs), 120.0, "closed").values())
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
    out: dict[str, Any] = {}
    for key in _IDLE_MEDIAN_KEYS:
        vals = [r[key] for r in runs if r.get(key) is not None]
        if vals:
            out[key] = round(statistics.median(vals), 3)
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
    out: dict[str, Any] = {}
    for key in _MEDIAN_KEYS:
        vals = [r[key] for r in runs if r.get(key) is not None]
        if vals:
            out[key] = round(statistics.median(vals), 3)
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
    for sc in report["scenarios"]:
        if sc["name"] == "idle_memory":
            continue
        first = True
        for name in ("mosquitto", "bayou"):
            r = sc.get(name)
            if r is None:
                continue
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
                _fmt(sc.get("ratio"), 3) if name == "bayou" else "",
            )
            first = False
    console.print(table)
    console.print(
        "ratio = Bayou msg per ingress CPU-second / mosquitto msg per broker CPU-second "
        "(target for qos1_puback vs mosquitto qos1_pub_sub: >= 0.5, DESIGN.md section 9); "
        "fanout_1000: msg = deliveries (target ratio >= 0.5)"
    )
    if idle:
        print_idle_table(idle[0])


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    names = [args.only] if args.only else ["mosquitto", "bayou"]
    errors: dict[str, str] = {}
    started: list[Broker] = []
    report: dict[str, Any] = {
        "machine": machine_info(),
        "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "brokers": {},
        "scenarios": [],
    }
    with tempfile.TemporaryDirectory(prefix="bayou-bench-") as tmp:
        workdir = Path(tmp)
        try:
            for name in names:
                broker: Broker = (
                    Mosquitto(workdir, args.mosquitto_nodelay)
                    if name == "mosquitto"
                    else Bayou(workdir)
                )
                console.print(f"starting {name} ...")
                try:
                    broker.start()
                except (BrokerError, OSError, TimeoutError) as exc:
                    errors[name] = str(exc)
                    console.print(f"[bold red]{name} unavailable:[/] {exc}")
                    continue
                started.append(broker)
                console.print(f"{name} listening on 127.0.0.1:{broker.port}")
            raw: dict[tuple[str, str], list[dict[str, Any]]] = {}
            t_begin = time.monotonic()
            # idle_memory first: it measures what the first connections cost a fresh broker,
            # before other scenarios leave freed memory behind for it to reuse.
            for sc in sorted(scenarios, key=lambda s: s.kind != "idle"):
                repeats = args.idle_repeat if sc.kind == "idle" else args.repeat
                for rep in range(repeats):
                    # Interleave, alternating which broker goes first.
                    order = started if rep % 2 == 0 else list(reversed(started))
                    for broker in order:
                        run_id = f"{sc.name}-{broker.name}-{rep}-{os.getpid()}"
                        try:
                            if sc.kind == "idle":
                                r = run_idle(broker, args, run_id)
                            elif sc.kind == "fanout":
                                r = run_fanout(broker, args, run_id)
                            else:
                                r = run_once(broker, sc, args, run_id)
                        except (RuntimeError, OSError) as exc:
                            console.print(f"[red]{sc.name} on {broker.name} failed:[/] {exc}")
                            errors[f"{sc.name}/{broker.name}/{rep}"] = str(exc)
                            continue
                        raw.setdefault((sc.name, broker.name), []).append(r)
                        if sc.kind == "idle":
                            console.print(
                                f"{sc.name:<13} {broker.name:<9} run {rep + 1}/{repeats}: "
                                f"{r['connections']:,} idle clients, RSS "
                                f"{r['rss_before_kib']:,} -> {r['rss_connected_kib']:,} -> "
                                f"{r['rss_after_disconnect_kib']:,} KiB, "
                                f"{_fmt(r['kib_per_connection'], 2)} KiB per connection"
                            )
                            continue
                        console.print(
                            f"{sc.name:<13} {broker.name:<9} run {rep + 1}/{repeats}: "
                            f"{r['msgs_per_s']:>10,.0f} msg/s  "
                            f"{_fmt(r['msgs_per_broker_cpu_s']):>10} msg/broker-CPU-s  "
                            f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
                            f"{r['completed']:,}/{r['sent']:,}"
                            + ("  STALLED" if r["stalled"] else "")
                            + ("  (stopped at --deadline)" if r["timed_out"] else "")
                        )
            report["duration_s"] = round(time.monotonic() - t_begin, 1)
            for broker in started:
                report["brokers"][broker.name] = broker.describe()
        finally:
            for broker in started:
                broker.stop()
    for sc in scenarios:
        entry: dict[str, Any] = {"name": sc.name, "title": sc.title}
        summ = summarize_idle if sc.kind == "idle" else summarize
        for name in ("mosquitto", "bayou"):
            runs = raw.get((sc.name, name))
            entry[name] = summ(runs) if runs else None
        m, b = entry["mosquitto"], entry["bayou"]
        key = "kib_per_connection" if sc.kind == "idle" else "msgs_per_broker_cpu_s"
        mo = m.get(key) if m else None
        bo = b.get(key) if b else None
        entry["ratio"] = round(bo / mo, 3) if mo and bo else None
        if sc.kind == "fanout":
            entry["qos"] = args.fanout_qos
            entry["subscribers"] = args.subscribers
            # Section 9: deliveries per broker CPU-second at least half of mosquitto's.
            entry["target"] = {"ratio_at_least": 0.5}
        elif sc.kind == "idle":
            entry["connections"] = args.idle_connections
            # ratio = Bayou KiB per idle client / mosquitto's (lower is better).
            entry["target"] = {"bayou_kib_per_connection_below": 4.0}
        report["scenarios"].append(entry)
    # The section 9 ingest target compares Bayou's QoS 1 publish->PUBACK with mosquitto's QoS 1
    # publisher->subscriber figure.
    by_name = {s["name"]: s for s in report["scenarios"]}
    ing, ref = by_name.get("qos1_puback"), by_name.get("qos1_pub_sub")
    if ing and ref and ing["bayou"] and ref["mosquitto"]:
        bo, mo = (
            ing["bayou"].get("msgs_per_broker_cpu_s"),
            ref["mosquitto"].get("msgs_per_broker_cpu_s"),
        )
        if bo and mo:
            report["ingest_target"] = {"ratio": round(bo / mo, 3), "target": 0.5}
    report["errors"] = errors
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    if "ingest_target" in report:
        t = report["ingest_target"]
        console.print(f"ingest target (section 9): ratio {t['ratio']:.3f}, target >= {t['target']}")
    console.print(f"results written to {args.output}")
    if errors:
        console.print(f"[bold red]{len(errors)} error(s)[/]: " + "; ".join(sorted(errors)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
