"""What ``/proc`` says about processes: CPU seconds, RSS, the open-file limit, descendants.

The parsers of ``/proc/<pid>/status`` and ``/proc/<pid>/limits`` text are pure (unit-tested);
the rest reads ``/proc`` of the live process.
"""

from __future__ import annotations

import os

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    # The command name is in parentheses and may hold spaces; fields after it are plain.
    return raw[raw.rfind(")") + 2 :].split()


def process_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` (and its reaped children), in seconds."""
    fields = _stat_fields(pid)
    # After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / _TICKS


def process_rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB (``/proc/<pid>/status``)."""
    with open(f"/proc/{pid}/status") as f:
        return parse_vmrss_kib(f.read())


def nofile_limits(pid: int) -> tuple[int | None, int | None]:
    """(soft, hard) open-file limit of ``pid``; None = unlimited, or (None, None) if unknown."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            return parse_nofile_limits(f.read())
    except (OSError, ValueError):
        return None, None


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def tree_cpu_s(pid: int) -> tuple[float, int]:
    """CPU seconds of ``pid`` and all its live descendants, and how many processes that is."""
    total = process_cpu_s(pid)
    kids = descendants(pid)
    for child in kids:
        try:
            total += process_cpu_s(child)
        except OSError:
            pass  # exited meanwhile; counted in its parent's cutime once reaped
    return total, 1 + len(kids)


def parse_vmrss_kib(status_text: str) -> int:
    """VmRSS in KiB from the text of ``/proc/<pid>/status``."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            fields = line.split()
            if len(fields) >= 3 and fields[2] != "kB":
                raise ValueError(f"unexpected VmRSS unit: {line!r}")
            return int(fields[1])
    raise ValueError("no VmRSS line (a kernel thread, or the process exited)")


def parse_nofile_limits(limits_text: str) -> tuple[int | None, int | None]:
    """(soft, hard) 'Max open files' from the text of ``/proc/<pid>/limits``; None = unlimited."""
    for line in limits_text.splitlines():
        if line.startswith("Max open files"):
            fields = line[len("Max open files") :].split()

            def val(s: str) -> int | None:
                return None if s == "unlimited" else int(s)

            return val(fields[0]), val(fields[1])
    raise ValueError("no 'Max open files' line")


def process_cpu_deltas(before: dict[int, float], after: dict[int, float]) -> list[float]:
    """CPU seconds each process spent between two readings, by pid order (the parent first).

    A process that appeared meanwhile counts from 0; one that vanished is left out.
    """
    return [round(after[pid] - before.get(pid, 0.0), 3) for pid in sorted(after)]
