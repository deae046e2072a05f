"""The MQTT 5 scenarios of the benchmark harness (``qos1_pub_sub_v5``, ``qos1_puback_v5``):
in the default run, on both brokers and no variants, and a short run of both on Bayou.

No assert on speed: the short run checks that every message went through on MQTT 5.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import cli, results
from benchmarks.scenarios import OPT_IN_SCENARIOS, SCENARIOS, broker_names

V5 = ("qos1_pub_sub_v5", "qos1_puback_v5")
by_name = {s.name: s for s in SCENARIOS}


def test_v5_scenarios_are_the_qos1_pair_on_protocol_5() -> None:
    for v5, v311 in zip(V5, ("qos1_pub_sub", "qos1_puback"), strict=True):
        sc, ref = by_name[v5], by_name[v311]
        assert (sc.protocol, ref.protocol) == (5, 4)
        assert (sc.qos, sc.with_subscriber, sc.kind) == (ref.qos, ref.with_subscriber, "pubsub")
        assert sc.title == ref.title + ", MQTT 5"
        assert v5 not in OPT_IN_SCENARIOS
    # Every other scenario stays on 3.1.1, but for the shared subscription one (MQTT 5's).
    assert {s.name for s in SCENARIOS if s.protocol != 4} == {*V5, "qos1_shared_v5"}
    shared = by_name["qos1_shared_v5"]
    assert (shared.protocol, shared.qos, shared.with_subscriber, shared.shared) == (
        5,
        1,
        True,
        True,
    )


def test_v5_scenarios_run_on_both_brokers_without_variants() -> None:
    argv = ["--kafka", "both", "--ingress-processes", "2"]
    for name in V5:
        assert broker_names(by_name[name], cli.parse_args([])) == ["mosquitto", "bayou"]
        assert broker_names(by_name[name], cli.parse_args(argv)) == ["mosquitto", "bayou"]
        assert broker_names(by_name[name], cli.parse_args(["--only", "bayou"])) == ["bayou"]


def _run(msgs_per_cpu_s: float) -> dict[str, object]:
    return {
        "sent": 10, "completed": 10, "stalled": False, "timed_out": False, "msgs_per_s": 5.0,
        "msgs_per_broker_cpu_s": msgs_per_cpu_s, "broker_cpu_s": 1.0, "p50_ms": 1.0,
        "p99_ms": 2.0, "max_ms": 3.0, "seconds": 2.0,
    }  # fmt: skip


def test_v5_entries_have_the_pubsub_shape_and_leave_the_ingest_target_alone() -> None:
    args = cli.parse_args([])
    raw = {
        (name, broker): [_run(per_cpu)]
        for name in (*V5, "qos1_pub_sub", "qos1_puback")
        for broker, per_cpu in (("mosquitto", 100.0), ("bayou", 40.0))
    }
    raw[("qos1_puback_v5", "bayou")] = [_run(90.0)]
    entries = [results.scenario_entry(by_name[n], raw, args) for n in V5]
    for entry in entries:
        assert set(entry) >= {"name", "title", "mosquitto", "bayou", "ratio", "target"}
        assert entry["bayou"]["completed"] == entry["bayou"]["sent"] == 10
    assert [e["ratio"] for e in entries] == [0.4, 0.9]
    # From the 3.1.1 pair only: Bayou qos1_puback / mosquitto qos1_pub_sub.
    ref = [results.scenario_entry(by_name[n], raw, args) for n in ("qos1_pub_sub", "qos1_puback")]
    assert results.ingest_targets([*ref, *entries]) == {
        "ingest_target": {"ratio": 0.4, "target": 0.5}
    }
    assert results.ingest_targets(entries) == {}


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_short_v5_run_on_bayou(tmp_path: Path) -> None:
    """Both MQTT 5 scenarios through ``main`` against Bayou: nothing lost or cut."""
    out = tmp_path / "bench.json"
    rc = cli.main(
        ["--only", "bayou", "--scenario", "qos1_pub_sub_v5", "--scenario", "qos1_puback_v5",
         "--messages", "3000", "--publishers", "1", "--warmup", "100", "--repeat", "1",
         "--output", str(out)]
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert rc == 0, report["errors"]
    assert [s["name"] for s in report["scenarios"]] == list(V5)
    for entry in report["scenarios"]:
        r = entry["bayou"]
        assert r["completed"] == r["sent"] == 3000, entry
        assert r["stalled_runs"] == r["time_bounded_runs"] == 0
        assert r["msgs_per_s"] > 0
    assert "ingest_target" not in report


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_short_shared_subscription_run_on_bayou(tmp_path: Path) -> None:
    """``qos1_shared_v5`` through ``main`` against Bayou: each subscriber is the one member of
    its shared subscription, and gets every message of its publisher through the group."""
    out = tmp_path / "bench.json"
    rc = cli.main(
        ["--only", "bayou", "--scenario", "qos1_shared_v5", "--messages", "3000",
         "--publishers", "2", "--warmup", "100", "--repeat", "1", "--output", str(out)]
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert rc == 0, report["errors"]
    (entry,) = report["scenarios"]
    r = entry["bayou"]
    assert entry["name"] == "qos1_shared_v5"
    assert r["completed"] == r["sent"] == 3000, entry
    assert r["stalled_runs"] == r["time_bounded_runs"] == 0
