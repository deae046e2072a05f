"""A real Prometheus scraping a real ingress node: the metrics reach PromQL as named.

An ingress node of the test's own (its counters start at zero) on the session's embedded
broker, a Prometheus started by the ``prometheus`` fixture (bayou.prometheus) scraping its
metrics port every second, and a real MQTT client publishing a few messages. Bounded waits
until ``up{job="bayou-ingress"}`` is 1 and ``sum(bayou_ingress_messages_in_total)`` counts
them all; the shipped recording rules then evaluate on the live series.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bayou.embedded import EmbeddedKafka
from bayou.prometheus import JOB_INGRESS
from tests.conftest import Proc, start_ingress
from tests.helpers import Mqtt
from tests.prometheus_fixture import PrometheusFactory, wait_value

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parent.parent / "dashboards" / "prometheus" / "rules.yml"
COUNT = 5
# Prometheus's first scrape of a static target comes up to 5s after it starts (discovery's
# update throttle), then every 1s; the bound leaves room for two loaded shared cores.
WAIT_S = 45


def test_prometheus_scrapes_an_ingress_node(
    kafka: EmbeddedKafka, procs: list[Proc], prometheus: PrometheusFactory, tmp_path: Path
) -> None:
    node = start_ingress(kafka.bootstrap, tmp_path / "ingress.log")
    procs.append(node)
    target = f"127.0.0.1:{node.metrics_port}"
    prom = prometheus({JOB_INGRESS: [target]}, rule_files=[RULES])

    dev = f"prom-{uuid.uuid4().hex[:8]}"
    device = Mqtt(node.mqtt_port, dev).connect()
    try:
        for i in range(COUNT):
            # QoS 1: the PUBACK comes once Kafka has the record, and the node counted it.
            info = device.publish(f"sensors/{dev}/telemetry", f'{{"temperature": {20 + i}}}')
            info.wait_for_publish(10)
    finally:
        device.close()

    assert wait_value(prom, f'up{{job="{JOB_INGRESS}"}}', lambda v: v == 1, WAIT_S) == 1
    total = wait_value(prom, "sum(bayou_ingress_messages_in_total)", lambda v: v >= COUNT, WAIT_S)
    assert total >= COUNT
    # The series carries the scrape's labels and the contract's.
    series = prom.query("bayou_ingress_messages_in_total")
    assert series, "no bayou_ingress_messages_in_total series"
    labels = series[0]["metric"]
    assert labels["job"] == JOB_INGRESS and labels["instance"] == target
    assert {"kafka_topic", "qos"} <= labels.keys()
    assert wait_value(prom, "bayou_ingress_ready", lambda v: v == 1, WAIT_S) == 1
    # The shipped recording rules load and evaluate on live data: a rate per instance.
    rate = wait_value(prom, "bayou:ingress_messages_in:rate1m", lambda v: v >= 0, WAIT_S)
    assert rate >= 0
