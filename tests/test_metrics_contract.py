"""The metric contract the dashboards read (docs/dashboards.md#metrics), on real processes.

A real ingress node and a real worker running the demo app on the embedded broker; a few
devices (real MQTT clients, real sockets) send readings at QoS 0 and 1, one of them a hot one
(an alert and a ``cool`` command) and one an invalid one (a dead letter). Both ``/metrics``
endpoints are scraped over HTTP before and after: each exposes exactly the metrics of the
contract (no other ``bayou_`` family), with their types and label names, and the values moved
where the traffic went. A persistent session caught up from Kafka counts its deliveries under
the Kafka topic they were read from.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.demo import device_group
from bayou.embedded import EmbeddedKafka
from ingress.contract.records import DEFAULT_TOPIC
from tests.conftest import Proc
from tests.helpers import Mqtt, read_topic, wait_until

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
    "bayou_ingress_sessions_expired": ("counter", ()),
    "bayou_ingress_shared_groups": ("gauge", ()),
    "bayou_ingress_shared_partitions": ("gauge", ()),
    "bayou_ingress_shared_redelivered": ("counter", ()),
    "bayou_ingress_retained_messages": ("gauge", ()),
    "bayou_ingress_catch_ups": ("counter", ()),
    "bayou_ingress_replayed_messages": ("counter", ()),
    "bayou_ingress_wills_sent": ("counter", ()),
    "bayou_ingress_command_events": ("counter", ("kind",)),
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
    "bayou_agent_commands": ("counter", ("app", "status")),
    "bayou_agent_commands_pending": ("gauge", ("app",)),
    "bayou_agent_command_response_seconds": ("histogram", ("app",)),
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


Families = dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]


def _exactly(families: Families, contract: dict[str, tuple[str, tuple[str, ...]]]) -> None:
    extra = sorted(n for n in families if n.startswith("bayou_") and n not in contract)
    assert not extra, f"metrics outside the contract: {extra}"
    _check(families, contract)


def _wait_for(scrape: Callable[[], dict[str, float]], want: dict[str, float], what: str) -> None:
    """Wait (bounded) until every value of ``scrape()`` reaches its minimum in ``want``; fail
    saying which did not."""
    last: dict[str, float] = {}

    def reached() -> bool:
        last.update(scrape())
        return all(last.get(k, 0.0) >= v for k, v in want.items())

    try:
        wait_until(reached, 30, what)
    except TimeoutError:
        short = {k: (last.get(k), f">= {v}") for k, v in want.items() if last.get(k, 0.0) < v}
        pytest.fail(f"timed out waiting for {what}; not reached: {short}")


def moved(after: Families, before: Families, sample: str, **labels: str) -> float:
    """How much ``sample`` (summed over the series with ``labels``) grew between two scrapes."""
    return _value(after, sample, **labels) - _value(before, sample, **labels)


def test_every_metric_of_the_contract_is_exposed_and_moves_with_traffic(
    ingress: Proc, worker: Proc
) -> None:
    i0, w0 = _families(ingress.metrics_port), _families(worker.metrics_port)
    run = uuid.uuid4().hex[:8]
    devs = [f"met-{run}-{n}" for n in range(3)]
    hot_dev, bad_dev = devs[0], devs[1]
    clients = [Mqtt(ingress.mqtt_port, d).connect() for d in devs]
    try:
        clients[0].subscribe(f"devices/{hot_dev}/commands", 1)
        now = time.time()
        for dev, c in zip(devs, clients, strict=True):
            reading = {"temperature": 21.0, "humidity": 40.0, "ts": now}
            c.publish(f"sensors/{dev}/telemetry", json.dumps(reading), qos=1).wait_for_publish(10)
            c.publish(f"sensors/{dev}/telemetry", json.dumps(reading), qos=0)
        hot = {"temperature": 36.6, "humidity": 40.0, "ts": now + 1}
        topic = f"sensors/{hot_dev}/telemetry"
        clients[0].publish(topic, json.dumps(hot), qos=1).wait_for_publish(10)
        clients[1].publish(f"sensors/{bad_dev}/telemetry", b"not json", qos=1).wait_for_publish(10)
        clients[0].expect(lambda m: m.topic == f"devices/{hot_dev}/commands")
        group = device_group(hot_dev)

        def worker_now() -> dict[str, float]:
            w = _families(worker.metrics_port)
            lag = w.get("bayou_agent_consumer_lag", ("", []))[1]
            assigned = _value(w, "bayou_agent_assigned_partitions")
            latency = "bayou_agent_command_latency_seconds_count"
            dead = "bayou_agent_dead_letters_total"
            records = "bayou_agent_records_in_total"
            return {
                "command latency count": moved(w, w0, latency, app="demo", group=group),
                "invalid dead letters": moved(
                    w, w0, dead, app="demo", agent="telemetry", reason="invalid"
                ),
                "records in": moved(w, w0, records, app="demo", agent="telemetry"),
                # one lag series per assigned input partition (the tracker's are apart)
                "lag series = assigned": float(
                    assigned > 0
                    and len([s for s in lag if s[1]["topic"] != "bayou.commands"]) == assigned
                ),
            }

        # The lag gauge is updated at most once a second; QoS 0 readings may come last.
        _wait_for(
            worker_now,
            {"command latency count": 1, "invalid dead letters": 1, "records in": 8,
             "lag series = assigned": 1},
            "the worker's metrics to show the traffic",
        )  # fmt: skip
        i = _families(ingress.metrics_port)
        w = _families(worker.metrics_port)
    finally:
        for c in clients:
            c.close()
    _exactly(i, INGRESS)
    _exactly(w, WORKER)

    telemetry = "bayou.telemetry"
    assert moved(i, i0, "bayou_ingress_messages_in_total", kafka_topic=telemetry, qos="1") >= 5
    assert moved(i, i0, "bayou_ingress_messages_in_total", kafka_topic=telemetry, qos="0") >= 3
    # The command came back from bayou.outbound at QoS 1 (the demo's commands are QoS 1).
    out = "bayou_ingress_messages_out_total"
    assert moved(i, i0, out, kafka_topic="bayou.outbound", qos="1") >= 1
    # Every PUBLISH in is more than 40 bytes; CONNACK, SUBACK, PUBACKs and the command went out.
    assert moved(i, i0, "bayou_ingress_bytes_in_total") > 8 * 40
    assert moved(i, i0, "bayou_ingress_bytes_out_total") > 3 * 4 + 5 * 4 + 40
    assert moved(i, i0, "bayou_ingress_connects_total") >= 3
    assert moved(i, i0, "bayou_ingress_end_to_end_seconds_count") >= 1

    assert moved(w, w0, "bayou_agent_app_commands_sent_total", app="demo", agent="telemetry") >= 1
    # Observed inside the agent: counted under the agent that acted (telemetry).
    assert moved(w, w0, "bayou_agent_app_alerts_fired_total", app="demo") >= 1
    reasons = {lbl["reason"] for _, lbl, _ in w["bayou_agent_dead_letters"][1]}
    assert "invalid" in reasons and "webhook_failed" in reasons, reasons
    groups = {
        lbl["group"]
        for name, lbl, v in w["bayou_agent_command_latency_seconds"][1]
        if name.endswith("_count") and v > 0
    }
    assert group in groups and groups <= {f"group-{n}" for n in range(4)}, groups
    lag = w["bayou_agent_consumer_lag"][1]
    # The demo's input, and bayou.commands of the command tracker's loop beside it.
    assert {lbl["topic"] for _, lbl, _ in lag} == {telemetry, "bayou.commands"}
    for topic in (telemetry, "bayou.commands"):
        partitions = sorted(int(lbl["partition"]) for _, lbl, _ in lag if lbl["topic"] == topic)
        assert partitions == list(range(len(partitions))), (topic, partitions)
    assert all(v >= 0 for _, _, v in lag), lag


def test_catch_up_deliveries_count_by_the_kafka_topic_read_from(
    kafka: EmbeddedKafka, ingress: Proc
) -> None:
    """A persistent session's subscriber reconnects and is caught up from Kafka: its messages
    count in ``bayou_ingress_messages_out_total`` under the topic they were read from."""
    before = _families(ingress.metrics_port)
    run = uuid.uuid4().hex[:8]
    cid, topic = f"met-sub-{run}", f"met/{run}/x"
    sub = Mqtt(ingress.mqtt_port, cid, clean_session=False).connect()
    sub.subscribe(topic, 1)
    sub.close()

    def offline() -> bool:
        recs = [r for r in read_topic(kafka.bootstrap, "bayou.sessions") if r.key == cid.encode()]
        return bool(recs) and recs[-1].value is not None and not json.loads(recs[-1].value)["owner"]

    wait_until(offline, 20, f"the offline session of {cid} in bayou.sessions")
    pub = Mqtt(ingress.mqtt_port, f"met-pub-{run}").connect()
    try:
        for n in range(3):
            pub.publish(topic, f"m{n}", qos=1).wait_for_publish(10)
    finally:
        pub.close()
    sub = Mqtt(ingress.mqtt_port, cid, clean_session=False).connect()
    try:
        got = [sub.expect(lambda m: m.topic == topic).payload for _ in range(3)]
    finally:
        sub.close()
    assert got == [b"m0", b"m1", b"m2"]
    after = _families(ingress.metrics_port)
    assert moved(after, before, "bayou_ingress_catch_ups_total") >= 1
    assert moved(after, before, "bayou_ingress_replayed_messages_total") >= 3
    out = "bayou_ingress_messages_out_total"
    assert moved(after, before, out, kafka_topic=DEFAULT_TOPIC, qos="1") >= 3
