"""What the harness prints for ``connect_auth``: a line per run, and the table of both brokers
with authentication and with anonymous access side by side."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from benchmarks.connect_auth import PHASES
from benchmarks.console import console, fmt

_PHASE_NAMES = {"auth": "password", "anonymous": "anonymous"}


def auth_run_line(r: dict[str, Any]) -> str:
    """One run's figures (after the run head of :func:`benchmarks.report.print_run`)."""
    return (
        "; ".join(
            f"{_PHASE_NAMES[p]}: {fmt(r.get(f'{p}_connects_per_s'))} connects/s, "
            f"p50 {fmt(r.get(f'{p}_p50_ms'), 2)} ms, p99 {fmt(r.get(f'{p}_p99_ms'), 2)} ms"
            for p in PHASES
        )
        + f" (wrong password: CONNACK {r.get('wrong_password_code')})"
    )


def print_auth_table(sc: dict[str, Any]) -> None:
    table = Table(title="CONNECT with a password vs anonymous (medians; connects one at a time)")
    cols = [
        "broker",
        "CONNECT",
        "connects",
        "connects/s",
        "connects per broker CPU-s",
        "broker CPU s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "auth / anon",
    ]
    for col in cols:
        table.add_column(col, justify="left" if col in ("broker", "CONNECT") else "right")
    for name in ("mosquitto", "bayou"):
        r = sc.get(name)
        if r is None:
            continue
        for phase in PHASES:
            table.add_row(
                name if phase == PHASES[0] else "",
                _PHASE_NAMES[phase],
                fmt(r.get(f"{phase}_connects")),
                fmt(r.get(f"{phase}_connects_per_s")),
                fmt(r.get(f"{phase}_connects_per_broker_cpu_s")),
                fmt(r.get(f"{phase}_broker_cpu_s"), 2),
                fmt(r.get(f"{phase}_p50_ms"), 2),
                fmt(r.get(f"{phase}_p99_ms"), 2),
                fmt(r.get(f"{phase}_max_ms"), 2),
                fmt(r.get("auth_vs_anonymous"), 3) if phase == PHASES[0] else "",
            )
    console.print(table)
    console.print(
        "auth / anon = connects/s with a password / connects/s anonymous (same broker); "
        f"ratio (Bayou / mosquitto connects/s with a password): {fmt(sc.get('ratio'), 3)}; "
        "Bayou checks argon2id hashes on 2 threads, mosquitto sha512-pbkdf2 on its one; "
        "no section 9 target"
    )
