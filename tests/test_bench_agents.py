"""Unit tests for the agent benchmark helpers (pure functions, no Kafka)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bayou.metrics_scrape import Samples
from benchmarks import agent_data as data
from benchmarks.agent_bench import agent_entry, summarize_agent
from benchmarks.agent_ref import WindowState
from benchmarks.cli import parse_args


def test_payload_is_exactly_the_size_and_valid_telemetry() -> None:
    raw = data.payload("dev-00042", 21.5, 40.1, 1_700_000_000.125)
    assert len(raw) == 100
    body = json.loads(raw)
    assert body["device"] == "dev-00042" and body["ts"] == 1_700_000_000.125
    r = data.Telemetry.model_validate_json(raw)
    assert (r.temperature, r.humidity) == (21.5, 40.1)


def test_payload_larger_than_size_is_not_truncated() -> None:
    raw = data.payload("dev-00042", 21.5, 40.1, 1.0, size=10)
    assert json.loads(raw)["device"] == "dev-00042" and "pad" not in json.loads(raw)


def test_records_spread_devices_and_event_times() -> None:
    recs = list(data.records(8, 4, 1000.0, 40.0, 4))
    assert [r.key for r in recs[:5]] == ["dev-00000", "dev-00001", "dev-00002", "dev-00003",
                                         "dev-00000"]  # fmt: skip
    assert [r.ts for r in recs] == [1000.0 + 5.0 * i for i in range(8)]
    assert all(r.partition == data.partition_of(r.key, 4) for r in recs)
    assert recs[0].mqtt_topic == "sensors/dev-00000/telemetry"
    assert all(len(r.value) == 100 for r in recs)


def test_partition_of_is_stable_and_in_range() -> None:
    assert data.partition_of("dev-00001", 4) == data.partition_of("dev-00001", 4)
    assert {data.partition_of(data.device_name(i), 4) for i in range(100)} == {0, 1, 2, 3}


def test_expected_windows_counts_device_window_pairs() -> None:
    # 4 devices, 8 records over 40 s from an aligned start: device d at 1000 + 5 i.
    assert data.expected_windows(8, 4, 1000.0, 40.0) == 8
    # One device: every record in its own 5 s slot, 2 per 10 s window.
    assert data.expected_windows(8, 1, 1000.0, 40.0) == 4
    # 10,000 devices x 200,000 records x 4 windows: 5 readings per device and window.
    assert data.expected_windows(200_000, 10_000, 1000.0, 40.0) == 40_000


def test_samples_read_unlabelled_samples() -> None:
    text = (
        "# HELP bayou_agent_ready x\n# TYPE bayou_agent_ready gauge\nbayou_agent_ready 1.0\n"
        "bayou_agent_records_in_total 2000.0\n"
        'bayou_agent_dead_letters_total{agent="a"} 3.0\n'
        "bayou_agent_records_in_created 1.7e9\n"
    )
    got = Samples(text).values(["bayou_agent_ready", "bayou_agent_records_in_total",
                                "bayou_agent_window_results_total"])  # fmt: skip
    assert got == {"bayou_agent_ready": 1.0, "bayou_agent_records_in_total": 2000.0}


def test_crossing_time_interpolates() -> None:
    samples = [(0.0, 0.0), (1.0, 100.0), (2.0, 300.0)]
    assert data.crossing_time(samples, 200.0) == pytest.approx(1.5)
    assert data.crossing_time(samples, 300.0) == pytest.approx(2.0)
    assert data.crossing_time(samples, 301.0) is None
    assert data.crossing_time([(5.0, 10.0)], 3.0) == 5.0
    assert data.crossing_time([(1.0, 5.0), (2.0, 5.0)], 5.0) == 1.0


def test_rate() -> None:
    assert data.rate(1000, 2.0) == 500.0
    assert data.rate(1000, 0.0) is None
    assert data.rate(1000, None) is None


def test_window_state_closes_at_watermark_and_drops_late() -> None:
    w = WindowState(size=10.0, grace=5.0)
    changed: set[str] = set()

    def r(ts: float, t: float) -> data.Telemetry:
        return data.Telemetry(temperature=t, humidity=0.0, ts=ts)

    w.fold("a", r(1000.0, 20.0), changed)
    w.fold("a", r(1004.0, 22.0), changed)
    w.fold("b", r(1012.0, 30.0), changed)
    assert w.close() == []  # watermark 1012 < 1010 + 5
    w.fold("b", r(1015.0, 30.0), changed)
    closed = w.close()
    assert closed == [{"id": "a|1000.0|1010.0", "key": "a", "start": 1000.0, "end": 1010.0,
                       "count": 2, "values": {"mean": 21.0}}]  # fmt: skip
    assert w.state("a") is None and w.state("b") == {"1010.0": [60.0, 2]}
    w.fold("a", r(1009.0, 1.0), changed)  # its window closed: late
    assert w.late == 1
    rest = w.close(to=math.inf)
    assert [c["id"] for c in rest] == ["b|1010.0|1020.0"]


def test_agent_entry_ratio_and_target() -> None:
    worker = [{"records_per_s": 40_000.0, "records_per_cpu_s": 50_000.0, "seconds": 5.0}]
    hand = [{"records_per_s": 50_000.0, "records_per_cpu_s": 55_000.0, "seconds": 4.0}]
    e = agent_entry("agent_count", "t", worker, hand)
    assert e["ratio"] == 0.8 and e["target_met"] is True
    assert e["cpu_ratio"] == pytest.approx(0.909)
    assert e["ratios_per_repeat"] == [0.8]
    none = agent_entry("agent_window_mean", "t", worker, [])
    assert none["ratio"] is None and none["target"] is None and none["hand_loop"] is None


def test_summarize_agent_medians() -> None:
    runs = [{"records_per_s": v, "timed_out": v < 2} for v in (1.0, 3.0, 2.0)]
    s = summarize_agent(runs)
    assert s["records_per_s"] == 2.0 and s["timed_out_runs"] == 1 and len(s["runs"]) == 3


def test_agent_options_are_checked() -> None:
    args = parse_args(["--scenario", "agent_count", "--agent-records", "1000"])
    assert args.agent_records == 1000 and args.agent_repeat == 3
    with pytest.raises(SystemExit):
        parse_args(["--agent-records", "10", "--agent-devices", "20"])


@pytest.mark.integration
def test_the_stock_faust_side_counts_committed_records(tmp_path: Path) -> None:
    """A real ``faust worker`` (benchmarks/faust_count.py) over a small preloaded topic on the
    embedded Kafka: the harness follows it through its committed offsets."""
    import argparse
    import time

    from benchmarks.agent_bench import preload
    from benchmarks.agent_faust import run_faust
    from tests.conftest import start_kafka

    k = start_kafka(tmp_path / "tansu.log")
    try:
        args = argparse.Namespace(agent_records=20_000, payload=100)
        t0 = float(int(time.time()) // 10 * 10 - 3600)
        preload(k.bootstrap, "bench.faust.in", args, 100, 40.0, t0)
        r = run_faust(k.bootstrap, "bench.faust.in", 4, "test", 3000, tmp_path, 90.0)
    finally:
        k.stop()
    assert not r["timed_out"], r
    assert r["records"] > 0 and r["records_per_s"] > 0 and r["cpu_s"] > 0
    assert r["join_s"] > 0
