"""The ``e2e_latency`` benchmark: its pure helpers, and a short real run of the machinery.

No assert on speed: the short run checks that every command arrived exactly once, at the
device it was meant for, and that the figures are consistent, not how fast they are.
"""

from __future__ import annotations

import array
import json
from pathlib import Path

import pytest

from benchmarks import latency
from benchmarks.agents_command import Reading
from benchmarks.cli import parse_args
from benchmarks.scenarios import SCENARIOS


def test_percentiles_nearest_rank() -> None:
    vals = array.array("q", [i * 1_000_000 for i in range(1, 1001)])  # 1..1000 ms
    got = latency.percentiles_ms(vals)
    assert got == {"p50": 500.0, "p90": 900.0, "p99": 990.0, "p999": 999.0, "max": 1000.0,
                   "mean": 500.5}  # fmt: skip
    one = latency.percentiles_ms([2_500_000])
    assert one["p50"] == one["p999"] == one["max"] == 2.5
    assert latency.percentiles_ms([])["p99"] is None


def test_reading_payload_is_padded_json_the_agent_model_reads() -> None:
    raw = latency.reading_payload(42, 123_456_789_012, 100)
    assert len(raw) == 100
    assert json.loads(raw)["seq"] == 42
    r = Reading.model_validate_json(raw)
    assert (r.seq, r.sent_ns) == (42, 123_456_789_012)
    short = latency.reading_payload(1, 2, 10)  # too small to pad: not truncated
    assert json.loads(short) == {"seq": 1, "sent_ns": 2}


def test_due_count_paces_against_the_clock() -> None:
    assert latency.due_count(0, 1000.0, 50) == 1  # the first message at once
    assert latency.due_count(999_999, 1000.0, 50) == 1
    assert latency.due_count(1_000_000, 1000.0, 50) == 2
    assert latency.due_count(10_000_000_000, 1000.0, 50) == 50  # capped at the total
    assert latency.due_count(-5, 1000.0, 50) == 0


def test_machine_busy_and_topic_helpers() -> None:
    stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 1 2 3\n"
    assert latency.machine_busy_s(stat, 100) == pytest.approx(1.61)
    assert latency.device_of_topic("devices/e2e-d3/commands") == "e2e-d3"
    assert latency.device_of_topic("devices/x") == ""


def test_entry_target_needs_p99_and_every_command() -> None:
    args = parse_args(["--scenario", "e2e_latency"])
    run = {"rate": 1000.0, "p50_ms": 5.0, "p99_ms": 12.0, "sent": 100, "received": 100,
           "missing": 0, "duplicates": 0, "misrouted": 0, "warmup_missing": 0,
           "pubacks_missing": 0}  # fmt: skip
    e = latency.e2e_entry([run], args, "t", {})
    assert e["target_met"] is True and e["target_applies"] is True
    assert e["target"]["p99_ms_below"] == 20.0 and e["bayou"]["p99_ms"] == 12.0
    lost = latency.e2e_entry([{**run, "received": 99, "missing": 1}], args, "t", {})
    assert lost["target_met"] is False
    slow = latency.e2e_entry([{**run, "p99_ms": 25.0}], args, "t", {})
    assert slow["target_met"] is False
    assert latency.e2e_entry([], args, "t", {})["target_met"] is None


def test_options_and_scenario_registered() -> None:
    args = parse_args(["--scenario", "e2e_latency", "--e2e-rate", "200", "--e2e-devices", "5"])
    assert (args.e2e_rate, args.e2e_devices, args.e2e_seconds) == (200.0, 5, 15.0)
    assert any(s.name == "e2e_latency" for s in SCENARIOS)
    with pytest.raises(SystemExit):
        parse_args(["--e2e-rate", "0"])


@pytest.mark.integration
def test_short_run_delivers_every_command(tmp_path: Path) -> None:
    args = parse_args(
        ["--scenario", "e2e_latency", "--e2e-rate", "200", "--e2e-seconds", "1.5",
         "--e2e-warmup", "1", "--e2e-devices", "5", "--e2e-drain", "20"]
    )  # fmt: skip
    errors: dict[str, str] = {}
    entry = latency.run_e2e_scenario("t", args, tmp_path, errors)
    assert errors == {}, errors
    b = entry["bayou"]
    assert b is not None
    (r,) = b["runs"]
    assert r["sent"] == 300 and r["received"] == 300 and r["missing"] == 0
    assert r["warmup_sent"] == 200 and r["warmup_missing"] == 0
    assert r["duplicates"] == 0 and r["misrouted"] == 0 and r["unexpected"] == 0
    assert r["pubacks_missing"] == 0 and not r["timed_out"]
    assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["p999_ms"] <= r["max_ms"]
    legs = r["legs"]
    # The agent ran after the reading was sent and before its command arrived.
    assert legs["publish_to_agent"]["p50"] > 0 and legs["agent_to_device"]["p50"] > 0
    assert legs["publish_to_agent"]["max"] <= r["max_ms"]
    assert r["rate"] > 0 and r["seconds"] > 0
    assert min(r["ingress_cpu_s"], r["worker_cpu_s"], r["kafka_cpu_s"]) >= 0
    assert r["worker_batches"]["records"] > 0
    assert sum(x["n"] for x in r["timeline"]) == 300
    assert entry["target_applies"] is False  # 200 msg/s says nothing about the target


def test_agent_echoes_each_reading_as_a_qos1_command() -> None:
    from agents.testing import run_app
    from benchmarks.agents_command import app

    outs = run_app(app, [("sensors/e2e-d1/telemetry", latency.reading_payload(7, 99))])
    assert [(o.topic, o.qos) for o in outs] == [("devices/e2e-d1/commands", 1)]
    body = outs[0].json()
    assert (body["seq"], body["sent_ns"]) == (7, 99) and body["agent_ns"] > 0


def test_timeline_slices_by_send_time() -> None:
    ms = 1_000_000
    sent = [0, 1_000 * ms, 5_000 * ms, 12_000 * ms]
    lat = [1 * ms, 3 * ms, 10 * ms, 20 * ms]
    got = latency.timeline(sent, lat, 0, 5.0)
    assert [(x["from_s"], x["n"], x["max"]) for x in got] == [(0.0, 2, 3.0), (5.0, 1, 10.0),
                                                              (10.0, 1, 20.0)]  # fmt: skip
