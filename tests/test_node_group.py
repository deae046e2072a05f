"""Several node processes sharing one MQTT port (SO_REUSEPORT), as one broker."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from pathlib import Path

import pytest

from bayou.embedded import EmbeddedKafka
from bayou.metrics_scrape import metric_value
from bayou.net import free_port
from bayou.processes import stop_process
from tests.conftest import BAYOU, bayou_env
from tests.helpers import Mqtt, alive, children_of, wait_until

pytestmark = pytest.mark.integration


def test_two_processes_share_the_port_and_act_as_one_broker(
    kafka: EmbeddedKafka, tmp_path: Path
) -> None:
    mqtt, metrics = free_port(), free_port()
    while metrics + 1 == mqtt:
        metrics = free_port()
    env = bayou_env(
        BAYOU_KAFKA_BOOTSTRAP=kafka.bootstrap,
        BAYOU_MQTT_PORT=str(mqtt),
        BAYOU_INGRESS_METRICS_PORT=str(metrics),
        BAYOU_INGRESS_PROCESSES="2",
    )
    with open(tmp_path / "group.log", "wb") as log:
        group = subprocess.Popen([*BAYOU, "ingress"], env=env, stdout=log, stderr=log)
    try:
        ports = (metrics, metrics + 1)
        wait_until(
            lambda: all(metric_value(p, "bayou_ingress_ready") == 1.0 for p in ports),
            60,
            "both node processes ready",
        )
        topic = f"grp/{uuid.uuid4().hex[:8]}"
        clients = [Mqtt(mqtt, f"c{i}-{uuid.uuid4().hex[:6]}").connect() for i in range(16)]
        try:
            for c in clients:
                c.subscribe(topic, 1)
            per_node = [metric_value(p, "bayou_ingress_connections") or 0 for p in ports]
            assert sum(per_node) == 16
            assert all(n > 0 for n in per_node), f"the kernel used one process only: {per_node}"
            clients[0].publish(topic, b"to-all", qos=1).wait_for_publish(10)
            for c in clients:
                assert c.expect(lambda m: m.topic == topic).payload == b"to-all"
        finally:
            for c in clients:
                c.close()
        kids = children_of(group.pid)
        assert len(kids) >= 2
    finally:
        stop_process(group)
    # The group waits for its node processes; were it killed, they die with it (PDEATHSIG).
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: not any(alive(k) for k in kids), 5, "the node processes to exit")
    assert not any(alive(k) for k in kids)
