"""What ``e2e_latency`` prints: a line per run as it ends, and the report's tables (the figures
per run, where the time goes, the drift, the worker's batches and the verdict on the target)."""

from __future__ import annotations

from typing import Any

from benchmarks.console import console, fmt
from benchmarks.e2e_figures import TARGET_P99_MS, TARGET_RATE, TIMELINE_S


def run_line(rep: int, repeats: int, r: dict[str, Any]) -> str:
    """The console line of run ``rep`` (0-based) of ``repeats``: its figures in short."""

    def f(v: Any, spec: str = ".2f") -> str:
        return "-" if v is None else format(v, spec)

    return (
        f"e2e_latency run {rep + 1}/{repeats}: {f(r['rate'], ',.0f')} msg/s  "
        f"p50 {f(r['p50_ms'])}  p90 {f(r['p90_ms'])}  p99 {f(r['p99_ms'])}  "
        f"p99.9 {f(r['p999_ms'])}  max {f(r['max_ms'])} ms  "
        f"{r['received']:,}/{r['sent']:,} commands  CPU ingress {r['ingress_cpu_s']:.2f} s, "
        f"worker {r['worker_cpu_s']:.2f} s, kafka {r['kafka_cpu_s']:.2f} s, "
        f"generator {r['generator_cpu_s']:.2f} s, everything else {r['other_cpu_s']:.2f} s "
        f"(of {r['seconds']:.1f} s x {r['cores']} cores); sends up to "
        f"{r['max_send_lag_ms']:.1f} ms behind schedule, {r['late_sends']:,} more than 1 ms"
        + (f"  MISSING {r['missing']:,}" if r["missing"] else "")
        + (f"  warm-up missing {r['warmup_missing']:,}" if r["warmup_missing"] else "")
    )


def print_e2e_table(entry: dict[str, Any]) -> None:
    """The rich tables of ``e2e_latency``: the figures per run and the legs of the latency."""
    from rich.table import Table

    b = entry.get("bayou")
    if not b:
        console.print(f"e2e_latency ({entry.get('kafka', 'embedded')} Kafka): no completed run")
        return
    par = entry["parameters"]
    on = "embedded Tansu"
    if entry.get("kafka") == "real":
        n = entry.get("kafka_brokers", 3)
        on = f"{n} Apache Kafka broker{'s' if n > 1 else ''}, RF {entry.get('replication_factor')}"
    table = Table(
        title=f"End-to-end latency on {on}: publish -> agent -> command at the device "
        f"({par['devices']} devices, QoS 1, {par['rate']:,.0f} msg/s asked; latency ms, CPU s "
        "over the span)"
    )
    cols = ["run", "msg/s", "commands", "p50", "p90", "p99", "p99.9", "max", "CPU ingress",
            "worker", "kafka", "gen.", "other"]  # fmt: skip
    for col in cols:
        wide = col == "commands"  # "15,000/15,000" must not be cut
        table.add_column(col, justify="left" if col == "run" else "right", no_wrap=wide,
                         min_width=13 if wide else None)  # fmt: skip
    rows = [(str(i + 1), r) for i, r in enumerate(b["runs"])]
    if len(rows) > 1:
        rows.append(("median", b))
    for name, r in rows:
        table.add_row(
            name,
            fmt(r.get("rate")),
            f"{r['received']:,}/{r['sent']:,}",
            fmt(r.get("p50_ms"), 2),
            fmt(r.get("p90_ms"), 2),
            fmt(r.get("p99_ms"), 2),
            fmt(r.get("p999_ms"), 2),
            fmt(r.get("max_ms"), 2),
            fmt(r.get("ingress_cpu_s"), 2),
            fmt(r.get("worker_cpu_s"), 2),
            fmt(r.get("kafka_cpu_s"), 2),
            fmt(r.get("generator_cpu_s"), 2),
            fmt(r.get("other_cpu_s"), 2),
        )
    console.print(table)
    legs = Table(title="Where the time goes (last run; ms)")
    for col in ["leg", "p50", "p90", "p99", "p99.9", "max", "mean"]:
        legs.add_column(col, justify="left" if col == "leg" else "right")
    last = b["runs"][-1]
    names = {
        "publish_to_puback": "publish -> PUBACK (reading in Kafka)",
        "publish_to_agent": "publish -> agent ran (worker)",
        "agent_to_device": "agent ran -> command at the device",
    }
    for key, label in names.items():
        v = last["legs"][key]
        legs.add_row(label, *(fmt(v.get(k), 2) for k in ("p50", "p90", "p99", "p999", "max",
                                                            "mean")))  # fmt: skip
    legs.add_row("publish -> command (end to end)",
                 *(fmt(last.get(f"{k}_ms"), 2) for k in ("p50", "p90", "p99", "p999", "max",
                                                            "mean")))  # fmt: skip
    console.print(legs)
    tl = last.get("timeline") or []
    if tl:
        console.print(
            f"p50 / p99 per {TIMELINE_S:.0f} s of the last run: "
            + ", ".join(f"{fmt(x['p50'], 0)} / {fmt(x['p99'], 0)}" for x in tl)
            + " ms"
        )
    wb = last.get("worker_batches")
    if wb:
        console.print(
            f"worker: {wb['batches']:,} batches in the measured span, "
            f"{fmt(wb['records_per_batch'], 1)} records per batch, "
            f"{fmt(wb['batches_per_s'], 1)} batches/s, {fmt(wb['batch_ms_mean'], 2)} ms "
            "per batch (process, produce, await acks, commit)"
        )
    met = entry.get("target_met")
    verdict = "-" if met is None else ("met" if met else "NOT met")
    if not entry.get("target_applies"):
        verdict += f" (not at {TARGET_RATE:,.0f} msg/s: says nothing about the target)"
    console.print(
        f"target (DESIGN.md section 9): p99 under {TARGET_P99_MS:.0f} ms at "
        f"{TARGET_RATE:,.0f} msg/s, every command delivered: {verdict} "
        f"(p99 {fmt(b.get('p99_ms'), 2)} ms, {b['missing']:,} missing)"
    )
