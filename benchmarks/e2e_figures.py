"""The figures of ``e2e_latency``: one run's from what the generator and the stack measured, and
the scenario's JSON entry (medians over the runs, what was lost, the target of DESIGN §9)."""

from __future__ import annotations

import argparse
import array
import os
from collections.abc import Sequence
from typing import Any

from benchmarks.e2e_generator import E2EResult
from benchmarks.e2e_stack import W_BATCH_S, W_BATCHES, W_RECORDS
from benchmarks.stats import medians

TARGET_P99_MS = 20.0
TARGET_RATE = 1000.0
TIMELINE_S = 5.0
# (name, per mille): nearest-rank percentiles.
PERCENTILES = (("p50", 500), ("p90", 900), ("p99", 990), ("p999", 999))


def percentiles_ms(values_ns: list[int] | array.array[int]) -> dict[str, float | None]:
    """p50/p90/p99/p99.9 (nearest rank), max and mean of latencies in ns, as ms (3 decimals)."""
    vals = sorted(values_ns)
    if not vals:
        return {**{k: None for k, _ in PERCENTILES}, "max": None, "mean": None}
    n = len(vals)
    out: dict[str, float | None] = {}
    for key, per_mille in PERCENTILES:
        # Nearest rank: the smallest value with at least that share of the values at or below.
        rank = -(-per_mille * n // 1000)  # ceil, in integers
        out[key] = round(vals[max(0, rank - 1)] / 1e6, 3)
    out["max"] = round(vals[-1] / 1e6, 3)
    out["mean"] = round(sum(vals) / n / 1e6, 3)
    return out


def timeline(
    sent_ns: Sequence[int], lat_ns: Sequence[int], t0_ns: int, slice_s: float
) -> list[dict[str, float | None]]:
    """p50/p99/max of the latencies of the readings sent in each ``slice_s`` of the run."""
    slices: dict[int, list[int]] = {}
    for t, v in zip(sent_ns, lat_ns, strict=True):
        slices.setdefault(max(0, int((t - t0_ns) / 1e9 // slice_s)), []).append(v)
    out: list[dict[str, float | None]] = []
    for i in sorted(slices):
        pc = percentiles_ms(slices[i])
        out.append({"from_s": round(i * slice_s, 1), "n": len(slices[i]), "p50": pc["p50"],
                    "p99": pc["p99"], "max": pc["max"]})  # fmt: skip
    return out


def _ns(raw: bytes) -> array.array[int]:
    a = array.array("q")
    a.frombytes(raw)
    return a


def run_figures(
    res: E2EResult,
    cpu0: dict[str, float],
    cpu1: dict[str, float],
    m0: dict[str, float],
    m1: dict[str, float],
) -> dict[str, Any]:
    """One run's figures, from the generator's result and the stack's CPU seconds
    (:meth:`E2EStack.cpu`) and worker metrics read at the first and last measured send."""
    span_s = (res.t_last_ns - res.t_first_ns) / 1e9
    cpu = {k: round(cpu1[k] - cpu0[k], 3) for k in cpu0}
    out: dict[str, Any] = {
        "sent": res.sent,
        "received": res.received,
        "missing": res.sent - res.received,
        "duplicates": res.duplicates,
        "misrouted": res.misrouted,
        "unexpected": res.unexpected,
        "warmup_sent": res.warmup_sent,
        "warmup_missing": res.warmup_sent - res.warmup_received,
        "missing_seqs": res.missing_seqs,
        "pubacks_missing": res.sent - res.pubacks,
        "seconds": round(span_s, 3),
        "rate": round((res.sent - 1) / span_s, 1) if span_s > 0 else None,
        "max_send_lag_ms": round(res.max_send_lag_ns / 1e6, 3),
        "late_sends": res.late_sends,
        "drain_s": round((res.t_done_ns - res.t_last_ns) / 1e9, 3),
        "timed_out": res.timed_out,
    }
    e2e_ns = _ns(res.e2e_ns)
    lat = percentiles_ms(e2e_ns)
    out.update({f"{k}_ms": v for k, v in lat.items()})
    out["legs"] = {
        "publish_to_puback": percentiles_ms(_ns(res.puback_ns)),
        "publish_to_agent": percentiles_ms(_ns(res.pub_agent_ns)),
        "agent_to_device": percentiles_ms(_ns(res.agent_dev_ns)),
    }
    # Does the latency drift during the run? Per 5 s of send time.
    out["timeline"] = timeline(_ns(res.sent_ns), e2e_ns, res.t_first_ns, TIMELINE_S)
    out["ingress_cpu_s"] = cpu["ingress"]
    out["worker_cpu_s"] = cpu["worker"]
    out["kafka_cpu_s"] = cpu["kafka"]
    out["generator_cpu_s"] = round(res.cpu_s, 3)
    # What else ran meanwhile: the machine's busy CPU-seconds minus this stack's and the
    # generator's (includes this harness process and other users of the machine).
    out["machine_cpu_s"] = cpu["machine"]
    ours = cpu["ingress"] + cpu["worker"] + cpu["kafka"] + res.cpu_s
    out["other_cpu_s"] = round(max(0.0, cpu["machine"] - ours), 3)
    out["cores"] = os.cpu_count()
    if m0 and m1 and W_BATCHES in m0 and W_BATCHES in m1:
        batches = m1[W_BATCHES] - m0[W_BATCHES]
        records = m1.get(W_RECORDS, 0.0) - m0.get(W_RECORDS, 0.0)
        busy = m1.get(W_BATCH_S, 0.0) - m0.get(W_BATCH_S, 0.0)
        out["worker_batches"] = {
            "batches": int(batches),
            "records": int(records),
            "records_per_batch": round(records / batches, 1) if batches else None,
            "batches_per_s": round(batches / span_s, 2) if span_s > 0 else None,
            "batch_ms_mean": round(busy / batches * 1000, 3) if batches else None,
        }
    return out


_MEDIAN_KEYS = [
    "rate",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
    "mean_ms",
    "ingress_cpu_s",
    "worker_cpu_s",
    "kafka_cpu_s",
    "generator_cpu_s",
    "machine_cpu_s",
    "other_cpu_s",
    "seconds",
    "max_send_lag_ms",
]


def e2e_entry(
    runs: list[dict[str, Any]], args: argparse.Namespace, title: str, extra: dict[str, Any]
) -> dict[str, Any]:
    """The JSON entry: medians over the runs, totals of what was lost, the target."""
    entry: dict[str, Any] = {"name": "e2e_latency", "title": title}
    entry["parameters"] = {
        "rate": args.e2e_rate,
        "seconds": args.e2e_seconds,
        "warmup_s": args.e2e_warmup,
        "devices": args.e2e_devices,
        "drain_s": args.e2e_drain,
        "payload": args.payload,
        "repeat": args.e2e_repeat,  # each on a fresh stack
    }
    entry.update(extra)
    if runs:
        b: dict[str, Any] = dict(medians(runs, _MEDIAN_KEYS))
        for key in ("sent", "received", "missing", "duplicates", "misrouted", "warmup_missing",
                    "pubacks_missing"):  # fmt: skip
            b[key] = sum(r[key] for r in runs)
        b["runs"] = runs
        entry["bayou"] = b
    else:
        entry["bayou"] = None
    entry["target"] = {"p99_ms_below": TARGET_P99_MS, "at_rate": TARGET_RATE, "all_delivered": True}
    b = entry["bayou"] or {}
    p99 = b.get("p99_ms")
    entry["target_met"] = (
        None
        if p99 is None
        else bool(p99 < TARGET_P99_MS and b["missing"] == 0 and b["warmup_missing"] == 0)
    )
    # The target is stated at 1,000 msg/s: a run at another rate says nothing about it.
    entry["target_applies"] = args.e2e_rate == TARGET_RATE
    return entry
