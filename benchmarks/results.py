"""The JSON results (``benchmarks/results/*.json``): the machine, medians over repeated runs,
ratios, each scenario's entry with its DESIGN section 9 target, and the ingest target."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.idle import summarize_idle
from benchmarks.scenarios import Scenario, broker_names
from benchmarks.stats import medians


def machine_info() -> dict[str, Any]:
    """The machine, Python, kernel, date and commit the results were measured on."""
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


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    """``numerator / denominator`` rounded; None when either is missing or the denominator 0."""
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)


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


def scenario_entry(
    sc: Scenario, raw: dict[tuple[str, str], list[dict[str, Any]]], args: argparse.Namespace
) -> dict[str, Any]:
    """The JSON entry of one scenario: medians per broker, the ratio, the section 9 target."""
    entry: dict[str, Any] = {"name": sc.name, "title": sc.title}
    summ = {
        "idle": summarize_idle,
        "offline": summarize_numeric,
        "reconnect": summarize_numeric,
        "auth": summarize_numeric,
    }
    for name in broker_names(sc, argparse.Namespace(**{**vars(args), "only": None})):
        runs = raw.get((sc.name, name))
        entry[name] = summ.get(sc.kind, summarize)(runs) if runs else None
    m, b = entry.get("mosquitto") or {}, entry.get("bayou") or {}
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
    elif sc.kind == "auth":
        entry["ratio"] = ratio(b.get("auth_connects_per_s"), m.get("auth_connects_per_s"))
        entry["ratio_means"] = (
            "Bayou connects/s with username + password / mosquitto's (higher is better for "
            "Bayou); each broker's own auth_vs_anonymous = its connects/s with a password / "
            "anonymous"
        )
        entry["cpu_ratio"] = ratio(
            b.get("auth_connects_per_broker_cpu_s"), m.get("auth_connects_per_broker_cpu_s")
        )
        entry["connects"] = args.auth_connects
        entry["target"] = None  # no section 9 target
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
        every = broker_names(sc, argparse.Namespace(**{**vars(args), "only": None}))
        for name in [n for n in every if n not in ("mosquitto", "bayou")]:
            v = entry.get(name) or {}
            # Per process: msg per CPU-second of all node processes (and their parent).
            entry[f"ratio_{name}"] = ratio(
                v.get("msgs_per_broker_cpu_s"), m.get("msgs_per_broker_cpu_s")
            )
            # Whole machine: wall-clock msg/s on the same 2 cores the generator shares.
            entry[f"whole_machine_ratio_{name}"] = ratio(v.get("msgs_per_s"), m.get("msgs_per_s"))
    return entry


def ingest_targets(scenarios: list[dict[str, Any]]) -> dict[str, Any]:
    """The section 9 ingest target per Bayou variant: Bayou's QoS 1 publish->PUBACK against
    mosquitto's QoS 1 publisher->subscriber figure (per ingress process: msg per CPU-second)."""
    out: dict[str, Any] = {}
    by_name = {s["name"]: s for s in scenarios}
    ing, ref = by_name.get("qos1_puback"), by_name.get("qos1_pub_sub")
    if ing and ref and ref["mosquitto"]:
        mo = ref["mosquitto"].get("msgs_per_broker_cpu_s")
        for name in [k for k in ing if k.startswith("bayou") and ing[k]]:
            got = ratio(ing[name].get("msgs_per_broker_cpu_s"), mo)
            if got is not None:
                key = "ingest_target" if name == "bayou" else f"ingest_target_{name}"
                out[key] = {"ratio": got, "target": 0.5}
    return out
