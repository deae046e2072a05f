"""The test suite's Apache Kafka launcher (tests/apache_kafka.py) with a port taken between
choosing it and the broker binding it, as happened under the full suite in CI."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bayou.net import free_port
from tests import apache_kafka
from tests.apache_kafka import ApacheKafka


@pytest.fixture
def taken() -> Iterator[socket.socket]:
    """A port some other process holds (a listening socket of this one)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s
    s.close()


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_a_port_taken_before_the_broker_binds_it_means_a_start_on_new_ports(
    tmp_path: Path, taken: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = int(taken.getsockname()[1])
    handed: list[int] = []

    def first_one_taken(host: str = "127.0.0.1") -> int:
        port = held if not handed else free_port(host)
        handed.append(port)
        return port

    monkeypatch.setattr(apache_kafka, "free_port", first_one_taken)
    k = ApacheKafka(tmp_path / "kafka", {"bayou": "pw-launcher"}, brokers=1)
    try:
        k.start(timeout=120)
        (node,) = k.nodes
        assert held not in node.ports.values()  # the second start chose other ports
        assert len(handed) == 2 * len(node.ports)
        assert k.running() == [0]
    finally:
        k.stop()


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_a_port_that_stays_taken_fails_with_the_log(
    tmp_path: Path, taken: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = int(taken.getsockname()[1])
    calls = iter(range(10_000))
    monkeypatch.setattr(
        apache_kafka,
        "free_port",
        lambda host="127.0.0.1": held if next(calls) == 0 else free_port(host),
    )
    k = ApacheKafka(tmp_path / "kafka", {"bayou": "pw-launcher"}, brokers=1)
    with pytest.raises(apache_kafka.KafkaStartError, match="exited with"):
        k.start(timeout=120, attempts=1)
    assert k.running() == []
