"""The ``connect_auth`` benchmark scenario: its CONNECT encoding, figures and JSON entry (pure
functions), and a smoke run of the scenario against a real Bayou ingress (no timed asserts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import cli, codec, connect_auth, results, scenarios
from benchmarks.brokers import Bayou
from ingress.wire.control_packets import decode_connect


def _decoded(packet: bytes) -> tuple[str | None, bytes | None, bool]:
    ((first, start, end),), used = codec.split_packets(bytearray(packet))
    assert used == len(packet) and first >> 4 == codec.CONNECT
    info = decode_connect(first & 0x0F, packet[start:end])
    return info.username, info.password, info.clean_session


def test_connect_with_credentials_is_what_the_broker_reads() -> None:
    # Checked against the ingress's own CONNECT decoder: the password is binary data.
    assert _decoded(codec.encode_connect("c", 60, True, "user", b"p\x00ss")) == (
        "user",
        b"p\x00ss",
        True,
    )
    assert _decoded(codec.encode_connect("c", 60, False, "user")) == ("user", None, False)
    assert _decoded(codec.encode_connect("c")) == (None, None, True)
    with pytest.raises(ValueError):
        codec.encode_connect("c", password=b"no username")


def test_phase_figures() -> None:
    took = sorted(i * 1_000_000 for i in range(1, 101))  # 1..100 ms
    f = connect_auth.phase_figures(took, 2.0, {"broker_cpu_s": 0.5, "kafka_cpu_s": 0.25})
    assert f["connects"] == 100 and f["connects_per_s"] == 50.0
    assert f["connects_per_broker_cpu_s"] == 200.0 and f["kafka_cpu_s"] == 0.25
    assert (f["p50_ms"], f["p99_ms"], f["max_ms"]) == (51.0, 99.0, 100.0)
    none = connect_auth.phase_figures([], 0.0, {"broker_cpu_s": 0.0})
    assert none["connects_per_s"] is None and none["p99_ms"] is None
    assert "kafka_cpu_s" not in none


def test_scenario_is_opt_in_with_its_option() -> None:
    assert "connect_auth" in scenarios.OPT_IN_SCENARIOS
    assert cli.parse_args([]).auth_connects == 2000
    args = cli.parse_args(["--scenario", "connect_auth", "--auth-connects", "20"])
    assert args.auth_connects == 20
    with pytest.raises(SystemExit):
        cli.parse_args(["--auth-connects", "0"])


def test_entry_ratio_is_bayou_over_mosquitto_with_a_password() -> None:
    (sc,) = [s for s in scenarios.SCENARIOS if s.name == "connect_auth"]
    run = {"auth_connects_per_s": 20.0, "auth_connects_per_broker_cpu_s": 10.0}
    raw = {
        ("connect_auth", "mosquitto"): [{**run, "auth_connects_per_s": 2000.0}],
        ("connect_auth", "bayou"): [run, {**run, "auth_connects_per_s": 40.0}],
    }
    entry = results.scenario_entry(sc, raw, cli.parse_args(["--auth-connects", "20"]))
    assert entry["bayou"]["auth_connects_per_s"] == 30.0  # median of the runs
    assert entry["ratio"] == 0.015 and entry["cpu_ratio"] == 1.0
    assert entry["connects"] == 20 and entry["target"] is None


@pytest.mark.integration
def test_connect_auth_smoke_against_bayou(tmp_path: Path) -> None:
    """The scenario's core on 20 connects per phase: auth proven on, figures present."""
    args = cli.parse_args(["--scenario", "connect_auth", "--auth-connects", "20"])
    broker = Bayou(tmp_path, 1, args.bayou_max_inflight)
    broker.start()  # its own embedded Kafka and ingress on free ports; stopped by pid below
    try:
        r = connect_auth.run_connect_auth(broker, args, "smoke")
        # Left as the harness starts it: anonymous clients.
        assert broker.extra_env == {}
    finally:
        broker.stop()
    assert r["wrong_password_code"] in connect_auth.REFUSED_CODES
    for phase in connect_auth.PHASES:
        assert r[f"{phase}_connects"] == 20
        for key in ("connects_per_s", "p50_ms", "p99_ms", "max_ms", "seconds"):
            assert r[f"{phase}_{key}"] > 0, (phase, key, r)
        assert r[f"{phase}_p50_ms"] <= r[f"{phase}_p99_ms"] <= r[f"{phase}_max_ms"]
        assert r[f"{phase}_broker_cpu_s"] >= 0 and r[f"{phase}_kafka_cpu_s"] >= 0
    assert r["auth_vs_anonymous"] > 0 and r["procs"] == connect_auth.PROCS
