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

from benchmarks.brokers import Bayou, Broker, BrokerError, Mosquitto
from benchmarks.load import WorkerParams, WorkerResult, worker_main

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    qos: int
    with_subscriber: bool


SCENARIOS = [
    Scenario("qos0_pub_sub", "QoS 0 publisher -> subscriber", 0, True),
    Scenario("qos1_pub_sub", "QoS 1 publisher -> subscriber", 1, True),
    Scenario("qos1_puback", "QoS 1 publish -> PUBACK, no subscriber", 1, False),
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
    for sc in report["scenarios"]:
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
        "(target for qos1_puback vs mosquitto qos1_pub_sub: >= 0.5, DESIGN.md section 9)"
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
            for sc in scenarios:
                for rep in range(args.repeat):
                    # Interleave, alternating which broker goes first.
                    order = started if rep % 2 == 0 else list(reversed(started))
                    for broker in order:
                        run_id = f"{sc.name}-{broker.name}-{rep}-{os.getpid()}"
                        try:
                            r = run_once(broker, sc, args, run_id)
                        except RuntimeError as exc:
                            console.print(f"[red]{sc.name} on {broker.name} failed:[/] {exc}")
                            errors[f"{sc.name}/{broker.name}/{rep}"] = str(exc)
                            continue
                        raw.setdefault((sc.name, broker.name), []).append(r)
                        console.print(
                            f"{sc.name:<13} {broker.name:<9} run {rep + 1}/{args.repeat}: "
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
        for name in ("mosquitto", "bayou"):
            runs = raw.get((sc.name, name))
            entry[name] = summarize(runs) if runs else None
        m, b = entry["mosquitto"], entry["bayou"]
        mo = m.get("msgs_per_broker_cpu_s") if m else None
        bo = b.get("msgs_per_broker_cpu_s") if b else None
        entry["ratio"] = round(bo / mo, 3) if mo and bo else None
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
