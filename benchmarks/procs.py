"""What generator processes report to the harness, and waiting for it.

A generator process (``multiprocessing``, fork) puts ``(kind, index, payload)`` tuples on a
queue: ``kind`` says what happened ("ready", "result", ...), ``index`` which process it is (0
for a lone one), and a report of kind "error" carries why the process failed.
"""

from __future__ import annotations

import queue
import time
from typing import Any


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
