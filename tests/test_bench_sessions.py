"""Unit tests for the benchmark harness's session and reporting helpers (no sockets, no brokers)."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import cli, connections, procfs, results, scenarios
from benchmarks import sessions_generator as sessions


def test_device_ids_and_topics() -> None:
    ids = sessions.device_ids("off-x", 3)
    assert ids == ["off-x-d0", "off-x-d1", "off-x-d2"]
    assert len(set(ids)) == 3
    assert sessions.device_topic(ids[1]) == "devices/off-x-d1/commands"


def test_tally_sessions_complete() -> None:
    assert sessions.tally_sessions([[0, 1, 2], [2, 1, 0]], 3) == {
        "sessions": 2,
        "complete": 2,
        "missing": 0,
        "duplicates": 0,
        "unexpected": 0,
    }


def test_tally_sessions_missing_duplicates_unexpected() -> None:
    got = sessions.tally_sessions([[0, 0, 1], [], [0, 1, 2, 7, -1]], 3)
    assert got == {
        "sessions": 3,
        "complete": 1,
        "missing": 1 + 3,
        "duplicates": 1,
        "unexpected": 2,
    }


def test_tally_sessions_empty() -> None:
    assert sessions.tally_sessions([], 5)["complete"] == 0


def test_connect_many_checks_own_topics_length() -> None:
    with pytest.raises(ValueError):
        connections.connect_many("127.0.0.1", 1, ["a", "b"], 60, own_topics=["t"])


@pytest.mark.parametrize(
    ("num", "den", "expected"),
    [
        (1.0, 2.0, 0.5),
        (3, 3, 1.0),
        (0.0, 2.0, 0.0),
        (None, 2.0, None),
        (1.0, None, None),
        (1.0, 0.0, None),
    ],
)
def test_ratio(num: float | None, den: float | None, expected: float | None) -> None:
    assert results.ratio(num, den) == expected


def test_process_cpu_deltas_by_pid_order() -> None:
    before = {300: 1.0, 100: 0.5, 200: 2.0}
    after = {100: 0.5, 200: 3.25, 300: 1.5, 400: 0.75}  # 400 started meanwhile
    assert procfs.process_cpu_deltas(before, after) == [0.0, 1.25, 0.5, 0.75]


def test_summarize_numeric_medians_and_sums_samples() -> None:
    runs = [
        {
            "seconds": 1.0,
            "sessions": 10,
            "timed_out": False,
            "sample": {"complete": 2, "seconds": 1},
        },
        {
            "seconds": 3.0,
            "sessions": 10,
            "timed_out": True,
            "sample": {"complete": 3, "seconds": 2},
        },
        {
            "seconds": 2.0,
            "sessions": 10,
            "timed_out": False,
            "sample": {"complete": 1, "seconds": 3},
        },
    ]
    out = results.summarize_numeric(runs)
    assert out["seconds"] == 2.0
    assert out["sessions"] == 10
    assert out["timed_out"] is True
    assert out["sample"] == {"complete": 6}
    assert out["runs"] is runs


def test_summarize_numeric_skips_missing_figures() -> None:
    out = results.summarize_numeric([{"seconds": None, "n": 1}, {"seconds": 4.0, "n": 3}])
    assert out["seconds"] == 4.0
    assert out["n"] == 2


def _args(**kw: object) -> argparse.Namespace:
    return cli.parse_args([f"--{k.replace('_', '-')}={v}" for k, v in kw.items()])


def test_broker_names_adds_the_multi_process_variant() -> None:
    by_name = {s.name: s for s in scenarios.SCENARIOS}
    args = _args(ingress_processes=2)
    assert scenarios.broker_names(by_name["qos1_puback"], _args()) == ["mosquitto", "bayou"]
    assert scenarios.broker_names(by_name["qos1_puback"], args) == [
        "mosquitto",
        "bayou",
        "bayou-2p",
    ]
    assert scenarios.broker_names(by_name["fanout_1000"], args)[-1] == "bayou-2p"
    assert scenarios.broker_names(by_name["qos2_puback"], args) == ["mosquitto", "bayou"]
    assert scenarios.broker_names(by_name["qos1_puback"], _args(ingress_processes=0)) == [
        "mosquitto",
        "bayou",
    ]
    assert scenarios.broker_names(by_name["qos1_puback"], _args(only="mosquitto")) == ["mosquitto"]


def test_parse_args_session_checks() -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(["--sessions", "10", "--sessions-sample", "11"])
    with pytest.raises(SystemExit):
        cli.parse_args(["--reconnect-messages", "0"])
    with pytest.raises(SystemExit):
        cli.parse_args(["--ingress-processes", "-1"])


def test_entry_ratios_for_new_scenarios() -> None:
    by_name = {s.name: s for s in scenarios.SCENARIOS}
    args = _args()
    raw = {
        ("reconnect_1000", "mosquitto"): [{"seconds": 2.0, "timed_out": False}],
        ("reconnect_1000", "bayou"): [{"seconds": 4.0, "timed_out": False}],
        ("offline_sessions", "mosquitto"): [
            {
                "kib_per_offline_session": 1.0,
                "kib_per_queued_message": 0.5,
                "kib_per_queued_message_2nd": 0.5,
            }
        ],
        ("offline_sessions", "bayou"): [
            {
                "kib_per_offline_session": 0.25,
                "kib_per_queued_message": 0.0,
                "kib_per_queued_message_2nd": 0.05,
            }
        ],
    }
    rec = results.scenario_entry(by_name["reconnect_1000"], raw, args)
    assert rec["ratio"] == 0.5  # mosquitto seconds / Bayou seconds
    off = results.scenario_entry(by_name["offline_sessions"], raw, args)
    assert off["ratio"] == 0.25
    assert off["target_met"] is True
    assert off["queued_ratio"] == 0.0
    assert off["queued_2nd_ratio"] == 0.1
    assert off["target"] == {"bayou_kib_per_queued_message_at_most": 0.1}
