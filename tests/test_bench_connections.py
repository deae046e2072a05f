"""Unit tests for the many-connection benchmark helpers (pure functions, no sockets)."""

from __future__ import annotations

import pytest

from benchmarks import fanout_generator, idle, procfs, procs
from benchmarks.idle import summarize_idle

STATUS = """Name:\tmosquitto
Umask:\t0022
State:\tS (sleeping)
VmPeak:\t   12000 kB
VmRSS:\t    8572 kB
RssAnon:\t    1200 kB
"""

LIMITS = """Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            20000                20000                files
Max locked memory         8388608              8388608              bytes
"""


def test_shares_split_evenly() -> None:
    assert procs.shares(10, 4) == [3, 3, 2, 2]
    assert procs.shares(1000, 4) == [250] * 4
    assert sum(procs.shares(10_001, 3)) == 10_001
    assert procs.shares(2, 3) == [1, 1, 0]
    with pytest.raises(ValueError):
        procs.shares(5, 0)


def test_parse_vmrss() -> None:
    assert procfs.parse_vmrss_kib(STATUS) == 8572
    with pytest.raises(ValueError):
        procfs.parse_vmrss_kib("Name:\tkthreadd\n")
    with pytest.raises(ValueError):
        procfs.parse_vmrss_kib("VmRSS:\t 5 MB\n")


def test_parse_nofile_limits() -> None:
    assert procfs.parse_nofile_limits(LIMITS) == (20000, 20000)
    unlimited = "Max open files            1024                 unlimited            files\n"
    assert procfs.parse_nofile_limits(unlimited) == (1024, None)
    with pytest.raises(ValueError):
        procfs.parse_nofile_limits("Max cpu time unlimited unlimited seconds\n")


def test_kib_per_connection() -> None:
    assert idle.kib_per_connection(8572, 16048, 10_000) == pytest.approx(0.7476)
    assert idle.kib_per_connection(100, 90, 10) == pytest.approx(-1.0)  # RSS can shrink
    assert idle.kib_per_connection(100, 200, 0) is None


@pytest.mark.parametrize(
    ("sent", "delivered", "subs", "window", "total", "batch", "room"),
    [
        (0, 0, 1000, 10, 300, 10, 10),  # nothing out: a full window
        (10, 0, 1000, 10, 300, 10, 0),  # ten messages, none delivered: wait
        (10, 1000, 1000, 10, 300, 10, 1),  # one message fully delivered: one more
        (10, 1999, 1000, 10, 300, 10, 1),  # a partly delivered message still counts
        (10, 10_000, 1000, 10, 300, 5, 5),  # capped by the batch
        (298, 298_000, 1000, 10, 300, 10, 2),  # capped by what is left to send
        (300, 300_000, 1000, 10, 300, 10, 0),  # done
        (5, 0, 1, 3, 100, 10, 0),  # never negative
    ],
)
def test_fanout_room(
    sent: int, delivered: int, subs: int, window: int, total: int, batch: int, room: int
) -> None:
    assert fanout_generator.fanout_room(sent, delivered, subs, window, total, batch) == room


def test_summarize_idle_medians() -> None:
    runs = [
        {
            "connections": 10_000,
            "kib_per_connection": k,
            "rss_before_kib": 100,
            "rss_connected_kib": 100 + int(k * 10_000),
            "rss_after_disconnect_kib": 150,
            "kib_kept_after_disconnect": 50,
            "connect_s": 1.0,
            "connects_per_s": 10_000.0,
            "idle_cpu_s_per_s": None,
        }
        for k in (3.0, 1.0, 2.0)
    ]
    runs[1]["connections"] = 9_999
    out = summarize_idle(runs)
    assert out["kib_per_connection"] == 2.0
    assert out["connections"] == 9_999
    assert "idle_cpu_s_per_s" not in out
    assert out["runs"] is runs
