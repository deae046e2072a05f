"""The metric contract the dashboards read (docs/dashboards.md#metrics), on real processes.

A real ingress node and a real worker running the demo app on the embedded broker; a device
(real MQTT client, real socket) sends a hot reading, an invalid one and a QoS 0 one. Both
``/metrics`` endpoints are then scraped over HTTP: every metric of the contract is there with
its type and label names, and the values moved where the traffic went.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Proc
from tests.helpers import Mqtt, wait_until

pytestmark = pytest.mark.integration

# name (as exposed, without _total/_bucket) → (type, label names)
INGRESS = {
    "bayou_ingress_ready": ("gauge", ()),
    "bayou_ingress_connections": ("gauge", ()),
    "bayou_ingress_connects": ("counter", ()),
    "bayou_ingress_messages_in": ("counter", ("kafka_topic", "qos")),
    "bayou_ingress_messages_out": ("counter", ("kafka_topic", "qos")),
    "bayou_ingress_bytes_in": ("counter", ()),
    "bayou_ingress_bytes_out": ("counter", ()),
    "bayou_ingress_kafka_produce_seconds": ("histogram", ()),
    "bayou_ingress_end_to_end_seconds": ("histogram", ()),
    "bayou_ingress_produce_failures": ("counter", ()),
    "bayou_ingress_subscriptions": ("gauge", ()),
    "bayou_ingress_sessions_stored": ("gauge", ()),
    "bayou_ingress_sessions_created": ("counter", ()),
    "bayou_ingress_sessions_resumed": ("counter", ()),
    "bayou_ingress_retained_messages": ("gauge", ()),
    "bayou_ingress_catch_ups": ("counter", ()),
    "bayou_ingress_replayed_messages": ("counter", ()),
    "bayou_ingress_wills_sent": ("counter", ()),
    "bayou_ingress_takeovers": ("counter", ()),
    "bayou_ingress_duplicate_results_dropped": ("counter", ()),
    "bayou_ingress_protocol_errors": ("counter", ("kind",)),
    "bayou_auth_failures": ("counter", ("reason",)),
    "bayou_acl_denied": ("counter", ("action",)),
    "bayou_limit_refusals": ("counter", ("limit",)),
}
WORKER = {
    "bayou_agent_ready": ("gauge", ()),
    "bayou_agent_assigned_partitions": ("gauge", ()),
    "bayou_agent_records_in": ("counter", ("app", "agent")),
    "bayou_agent_batch_seconds": ("histogram", ()),
    "bayou_agent_dead_letters": ("counter", ("app", "agent", "reason")),
    "bayou_agent_window_results": ("counter", ("app", "agent")),
    "bayou_agent_late_events": ("counter", ("app", "agent")),
    "bayou_agent_app_alerts_fired": ("counter", ("app", "agent")),
    "bayou_agent_app_alerts_resolved": ("counter", ("app", "agent")),
    "bayou_agent_app_commands_sent": ("counter", ("app", "agent")),
    "bayou_agent_app_webhook_calls_ok": ("counter", ("app", "agent")),
    "bayou_agent_app_webhook_calls_failed": ("counter", ("app", "agent")),
    "bayou_agent_app_webhook_retries": ("counter", ("app", "agent")),
    "bayou_agent_consumer_lag": ("gauge", ("topic", "partition")),
    "bayou_agent_command_latency_seconds": ("histogram", ("app", "group")),
}
# Label sets the histograms add to their samples.
_SAMPLE_LABELS = {"le"}


def _families(port: int) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        f.name: (f.type, [(s.name, dict(s.labels), float(s.value)) for s in f.samples])
        for f in text_string_to_metric_families(text)
    }


def _check(families: dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]],
           contract: dict[str, tuple[str, tuple[str, ...]]]) -> None:  # fmt: skip
    missing = sorted(set(contract) - set(families))
    assert not missing, f"metrics missing: {missing}"
    for name, (kind, labels) in contract.items():
        got_kind, samples = families[name]
        assert got_kind == kind, f"{name}: {got_kind}, expected {kind}"
        for sample, lbl, _ in samples:
            names = set(lbl) - _SAMPLE_LABELS
            assert names == set(labels), f"{sample}: labels {sorted(names)}, expected {labels}"


def _value(families: dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]],
           sample: str, **labels: str) -> float:  # fmt: skip
    """The sum of the samples named ``sample`` whose labels include ``labels``."""
    total = 0.0
    for _, samples in families.values():
        for name, lbl, v in samples:
            if name == sample and all(lbl.get(k) == want for k, want in labels.items()):
                total += v
    return total


def test_every_metric_of_the_contract_is_exposed_and_moves_with_traffic(
    ingress: Proc, worker: Proc
) -> None:
    dev = f"met-{uuid.uuid4().hex[:8]}"
    device = Mqtt(ingress.mqtt_port, dev).connect()
    try:
        device.subscribe(f"devices/{dev}/commands", 1)
        topic = f"sensors/{dev}/telemetry"
        reading = {"temperature": 36.6, "humidity": 40.0, "ts": time.time()}
        device.publish(topic, json.dumps(reading), qos=1).wait_for_publish(10)
        device.publish(topic, b"not json", qos=1).wait_for_publish(10)
        device.publish(topic, json.dumps({**reading, "temperature": 20.0}), qos=0)
        device.expect(lambda m: m.topic == f"devices/{dev}/commands")

        def worker_counted() -> bool:
            w = _families(worker.metrics_port)
            return (
                _value(w, "bayou_agent_command_latency_seconds_count", app="demo") >= 1
                and _value(w, "bayou_agent_dead_letters_total", reason="invalid") >= 1
                and bool(w.get("bayou_agent_consumer_lag", ("", []))[1])
            )

        # The lag gauge is updated at most once a second.
        wait_until(worker_counted, 20, "the worker's metrics to show the traffic")
        i = _families(ingress.metrics_port)
        w = _families(worker.metrics_port)
    finally:
        device.close()
    _check(i, INGRESS)
    _check(w, WORKER)

    telemetry = "bayou.telemetry"
    assert _value(i, "bayou_ingress_messages_in_total", kafka_topic=telemetry, qos="1") >= 2
    assert _value(i, "bayou_ingress_messages_in_total", kafka_topic=telemetry, qos="0") >= 1
    # The command came back from bayou.outbound at QoS 1.
    assert _value(i, "bayou_ingress_messages_out_total", kafka_topic="bayou.outbound", qos="1") >= 1
    assert _value(i, "bayou_ingress_bytes_in_total") > 100
    assert _value(i, "bayou_ingress_bytes_out_total") > 10
    assert _value(i, "bayou_ingress_end_to_end_seconds_count") >= 1

    assert _value(w, "bayou_agent_records_in_total", app="demo", agent="telemetry") >= 3
    assert _value(w, "bayou_agent_dead_letters_total", app="demo", agent="telemetry",
                  reason="invalid") >= 1  # fmt: skip
    assert _value(w, "bayou_agent_app_commands_sent_total", app="demo") >= 1
    groups = {
        lbl["group"]
        for name, lbl, v in w["bayou_agent_command_latency_seconds"][1]
        if name.endswith("_count") and v > 0
    }
    assert groups and groups <= {f"group-{n}" for n in range(4)}, groups
    lag = w["bayou_agent_consumer_lag"][1]
    assert {lbl["topic"] for _, lbl, _ in lag} == {telemetry}
    assert all(v >= 0 for _, _, v in lag)
