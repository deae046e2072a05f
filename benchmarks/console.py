"""The harness console and the number formatting every table and run line shares.

One rich ``Console`` for the whole run (132 columns when the output is not a terminal, so the
tables in a captured log keep their shape).
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 132)


def fmt(v: Any, digits: int = 0) -> str:
    """``v`` for a table cell: thousands separators, ``digits`` decimals, None as -."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def say(line: str) -> None:
    """A line on the harness console, as it is (no markup)."""
    console.print(line, markup=False, highlight=False)
