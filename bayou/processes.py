"""Stopping child processes by PID: signal, wait with a deadline, then SIGKILL, and reap.

The one way Bayou's command line, its tests and its benchmarks stop what they start, for
``subprocess.Popen`` children and ``multiprocessing`` (fork) children alike. Also the
``preexec_fn`` that ties a child's lifetime to its parent's.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from multiprocessing.process import BaseProcess
from typing import Any

Child = subprocess.Popen[Any] | BaseProcess


def die_with_parent() -> None:
    """``preexec_fn`` for children: SIGTERM them when their parent dies (no orphans)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _exited(proc: Child) -> bool:
    if isinstance(proc, subprocess.Popen):
        return proc.poll() is not None
    return proc.exitcode is not None


def _signal(proc: Child, sig: int) -> None:
    if isinstance(proc, subprocess.Popen):
        proc.send_signal(sig)  # a no-op once Popen has reaped it
        return
    if proc.pid is None or proc.exitcode is not None:
        return
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


def _wait(proc: Child, timeout: float | None) -> bool:
    """Wait (and reap) up to ``timeout`` s (None: forever); True when it has exited."""
    if isinstance(proc, subprocess.Popen):
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    if proc.pid is None:  # never started
        return True
    proc.join(timeout)
    return proc.exitcode is not None


def stop_processes(
    procs: Iterable[Child | None],
    timeout: float = 10.0,
    sig: int | None = signal.SIGTERM,
) -> list[bool]:
    """Send ``sig`` to every live child, wait for all of them against one deadline of
    ``timeout`` s, then SIGKILL and reap those still running.

    ``sig`` None sends nothing first: for children that end by themselves (generator
    processes told to stop by an event), which get ``timeout`` s to do so. Per child (in
    order): True when it exited in time (or had already, or is None), False when killed.
    """
    children = list(procs)
    for proc in children:
        if proc is not None and sig is not None and not _exited(proc):
            _signal(proc, sig)
    deadline = time.monotonic() + timeout
    in_time: list[bool] = []
    for proc in children:
        if proc is None:
            in_time.append(True)
            continue
        # Every child gets a short wait even past the deadline: it may just be exiting.
        if _wait(proc, max(0.1, deadline - time.monotonic())):
            in_time.append(True)
            continue
        _signal(proc, signal.SIGKILL)
        _wait(proc, None)
        in_time.append(False)
    return in_time


def stop_process(
    proc: Child | None, timeout: float = 10.0, sig: int | None = signal.SIGTERM
) -> bool:
    """Stop one child (see :func:`stop_processes`): True when it exited within ``timeout``
    s of ``sig``, False when it had to be killed. None or already exited: just reaped."""
    return stop_processes([proc], timeout, sig)[0]
