"""Generator processes: splitting work among them, starting them, what they report to the
harness, and waiting for it.

A generator process (``multiprocessing``, fork) puts ``(kind, index, payload)`` tuples on a
queue: ``kind`` says what happened ("ready", "result", ...), ``index`` which process it is (0
for a lone one), and a report of kind "error" carries why the process failed.
"""

from __future__ import annotations

import queue
import time
from typing import Any


def shares(total: int, parts: int) -> list[int]:
    """Split ``total`` into ``parts`` near-equal non-negative counts (the first ones larger)."""
    if parts <= 0:
        raise ValueError("parts must be positive")
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def spawn_all(ctx: Any, target: Any, arg_lists: list[tuple[Any, ...]]) -> list[Any]:
    """Start one daemon process of ``ctx`` running ``target`` per argument tuple."""
    procs = [ctx.Process(target=target, args=a, daemon=True) for a in arg_lists]
    for proc in procs:
        proc.start()
    return procs


def expect_reports(results: Any, kind: str, n: int, timeout: float, what: str) -> dict[int, Any]:
    """Wait for ``n`` messages of ``kind`` from generator processes; raise on an error report.

    The payloads by process index; ``what`` names the step in the error messages.
    """
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


def expect_report(results: Any, kind: str, timeout: float, what: str) -> Any:
    """The payload of the next message of ``kind`` from a lone generator process."""
    (payload,) = expect_reports(results, kind, 1, timeout, what).values()
    return payload
