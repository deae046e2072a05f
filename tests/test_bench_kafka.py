"""``--kafka embedded|real|both`` of the benchmark harness: which scenario runs on which Kafka,
and a short real run of the harness on a 3-broker Apache Kafka.

No assert on speed: the short run checks that the scenarios ran on the real cluster (replication
factor 3, the brokers' CPU counted), that nothing was lost and that the report says which
Kafka each figure is from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import cli
from benchmarks.kafka_backends import REAL_BAYOU, REAL_KAFKA_SCENARIOS, kafka_kinds
from benchmarks.scenarios import SCENARIOS, broker_names


def _names(argv: list[str], scenario: str) -> list[str]:
    args = cli.parse_args(argv)
    (sc,) = [s for s in SCENARIOS if s.name == scenario]
    return broker_names(sc, args)


def test_embedded_is_the_default_and_runs_everything_on_tansu() -> None:
    args = cli.parse_args([])
    assert args.kafka == "embedded"
    assert all(kafka_kinds(args, s.name) == ["embedded"] for s in SCENARIOS)
    assert _names([], "qos1_puback") == ["mosquitto", "bayou"]


def test_real_replaces_the_embedded_bayou_in_the_listed_scenarios_only() -> None:
    assert _names(["--kafka", "real"], "qos1_puback") == ["mosquitto", REAL_BAYOU]
    assert _names(["--kafka", "real"], "fanout_1000") == ["mosquitto", REAL_BAYOU]
    # Not asked on real Kafka: stays on the embedded broker.
    assert _names(["--kafka", "real"], "idle_memory") == ["mosquitto", "bayou"]
    args = cli.parse_args(["--kafka", "real"])
    assert kafka_kinds(args, "agent_count") == ["real"]
    assert kafka_kinds(args, "agent_window_mean") == ["embedded"]


def test_both_runs_the_listed_scenarios_side_by_side() -> None:
    argv = ["--kafka", "both", "--ingress-processes", "2"]
    assert _names(argv, "qos1_puback") == ["mosquitto", "bayou", "bayou-2p", REAL_BAYOU]
    assert _names([*argv, "--only", "bayou"], "qos1_pub_sub") == ["bayou", REAL_BAYOU]
    assert _names([*argv, "--only", "mosquitto"], "qos1_pub_sub") == ["mosquitto"]
    args = cli.parse_args(argv)
    for name in ("agent_count", "e2e_latency"):
        assert kafka_kinds(args, name) == ["embedded", "real"]
    assert set(REAL_KAFKA_SCENARIOS) <= {s.name for s in SCENARIOS}
    with pytest.raises(SystemExit):
        cli.parse_args(["--kafka", "tansu"])


@pytest.mark.integration
@pytest.mark.timeout(420)
def test_short_run_on_real_kafka(tmp_path: Path) -> None:
    """ingest (qos1_puback), agent_count and e2e_latency through ``main`` on 3 Apache Kafka
    brokers started by the harness itself (it stops them by PID)."""
    out = tmp_path / "bench.json"
    rc = cli.main(
        ["--kafka", "real", "--only", "bayou", "--output", str(out),
         "--scenario", "qos1_puback", "--messages", "4000", "--publishers", "1",
         "--warmup", "200", "--repeat", "1",
         "--scenario", "agent_count", "--agent-records", "4000", "--agent-devices", "50",
         "--agent-repeat", "1", "--faust-records", "0",
         "--scenario", "e2e_latency", "--e2e-rate", "200", "--e2e-seconds", "1.5",
         "--e2e-warmup", "1", "--e2e-devices", "5", "--e2e-drain", "20"]
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert rc == 0, report["errors"]
    by_name = {s["name"]: s for s in report["scenarios"]}
    ingest = by_name["qos1_puback"]
    assert "bayou" not in ingest  # --kafka real: not on the embedded broker
    r = ingest[REAL_BAYOU]
    assert r["completed"] == r["sent"] == 4000
    assert r["kafka_cpu_s"] > 0  # the three JVMs' CPU, not nothing
    assert "Apache Kafka, 3 KRaft brokers" in str(report["brokers"][REAL_BAYOU]["kafka"])
    agent = by_name["agent_count"]
    assert (agent["kafka"], agent["replication_factor"]) == ("real", 3)
    assert agent["worker"]["records_per_s"] > 0 and agent["hand_loop"]["records_per_s"] > 0
    assert "faust" not in agent
    e2e = by_name["e2e_latency"]
    assert e2e["kafka"] == "real"
    (run,) = e2e["bayou"]["runs"]
    assert run["sent"] == run["received"] == 300
    assert run["missing"] == run["duplicates"] == run["pubacks_missing"] == 0
    assert run["kafka_cpu_s"] > 0
