"""The test suite's Apache Kafka launcher (tests/apache_kafka.py) with a port taken between
choosing it and the broker binding it, as happened under the full suite in CI."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bayou.net import free_port
from tests import apache_kafka
from tests.apache_kafka import ApacheKafka


@dataclass
class Ports:
    """``held``: a port another socket listens on; ``handed``: every port the launcher got."""

    held: int
    handed: list[int] = field(default_factory=list)


@pytest.fixture
def ports(monkeypatch: pytest.MonkeyPatch) -> Iterator[Ports]:
    """The launcher's free_port hands out the held port first, then free ones."""
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    got = Ports(int(taken.getsockname()[1]))

    def first_one_taken(host: str = "127.0.0.1") -> int:
        port = free_port(host) if got.handed else got.held
        got.handed.append(port)
        return port

    monkeypatch.setattr(apache_kafka, "free_port", first_one_taken)
    yield got
    taken.close()


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_a_port_taken_before_the_broker_binds_it_means_a_start_on_new_ports(
    tmp_path: Path, ports: Ports
) -> None:
    k = ApacheKafka(tmp_path / "kafka", {"bayou": "pw-launcher"}, brokers=1)
    try:
        k.start(timeout=120)
        (node,) = k.nodes
        assert ports.held not in node.ports.values()  # the second start chose other ports
        assert len(ports.handed) == 2 * len(node.ports)
        assert k.running() == [0]
    finally:
        k.stop()


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_a_port_that_stays_taken_fails_with_the_log(tmp_path: Path, ports: Ports) -> None:
    k = ApacheKafka(tmp_path / "kafka", {"bayou": "pw-launcher"}, brokers=1)
    with pytest.raises(apache_kafka.KafkaStartError, match="exited with"):
        k.start(timeout=120, attempts=1)
    assert k.running() == []
