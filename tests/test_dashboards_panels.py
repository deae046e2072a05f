"""Every panel is proven: each PromQL target of each shipped dashboard returns data of its shape.

Real parts only: an ingress node and a worker running the demo app on the embedded broker, a real
Prometheus (Debian's package, through the ``prometheus`` fixture) scraping both every second,
and MQTT devices over real sockets driving the demo pipeline (readings, a hot one, an invalid
one, a window closed). Then every target expression of every dashboard in
``dashboards/generated/dashboards`` — with its variables matching everything and
``$__rate_interval`` as 1m, as ``bayou dashboards snapshot`` runs them — must return at least one
series, each carrying the labels its legend names. The same Prometheus then feeds
``bayou dashboards snapshot``, which must draw one PNG per dashboard.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from bayou.prometheus import JOB_INGRESS, JOB_WORKER, Prometheus
from dashboards.snapshot import expand
from tests.conftest import BAYOU, Proc, bayou_env
from tests.helpers import Mqtt
from tests.prometheus_fixture import PrometheusFactory, wait_value

pytestmark = pytest.mark.integration

GENERATED = Path(__file__).resolve().parent.parent / "dashboards" / "generated" / "dashboards"


def _targets() -> list[tuple[str, str, str, str, list[str]]]:
    """(dashboard uid, panel title, expression, legend, variables) of every Prometheus target."""
    out = []
    for path in sorted(GENERATED.glob("*.json")):
        board = json.loads(path.read_text())
        variables = [v["name"] for v in board.get("templating", {}).get("list", [])]
        for panel in board["panels"]:
            for t in panel.get("targets", []):
                if t.get("expr"):
                    out.append((board["uid"], panel["title"], t["expr"], t.get("legendFormat")
                                or "", variables))  # fmt: skip
    return out


def _drive(ingress: Proc) -> None:
    """A few devices through the demo pipeline: readings, an alert and its command (answered),
    a dead letter, a closed window."""
    run = uuid.uuid4().hex[:6]
    watcher = Mqtt(ingress.mqtt_port, f"panels-watch-{run}").connect()
    watcher.subscribe("sensors/+/stats", 1)
    devices = [Mqtt(ingress.mqtt_port, f"panels-{run}-{i}").connect() for i in range(4)]
    try:
        start = (int(time.time()) // 10) * 10 - 600  # an old window: closes at once
        for i, d in enumerate(devices):
            name = d.client_id
            d.subscribe(f"devices/{name}/commands", 1)
            topic = f"sensors/{name}/telemetry"
            for ts, temp in ((start + 1, 21.0), (start + 5, 23.0), (start + 13, 22.0)):
                body = {"temperature": temp, "humidity": 40.0, "ts": ts}
                d.publish(topic, json.dumps(body), qos=i % 2).wait_for_publish(10)
            hot = {"temperature": 35.0 + i, "humidity": 40.0, "ts": time.time()}
            d.publish(topic, json.dumps(hot), qos=1).wait_for_publish(10)
            d.publish(topic, b"not json", qos=1).wait_for_publish(10)
        for d in devices:
            command_topic = f"devices/{d.client_id}/commands"
            got = d.expect(lambda m: m.topic == command_topic)  # noqa: B023 (called here, at once)
            # The demo's commands expect a response: the device answers by the 3.1.1 convention.
            answer = f"{command_topic}/response/{json.loads(got.payload)['command_id']}"
            d.publish(answer, b'{"ok":true}', qos=1).wait_for_publish(10)
        watcher.expect(lambda m: m.topic.startswith(f"sensors/panels-{run}-"))
    finally:
        for d in [*devices, watcher]:
            d.close()


def _legend_labels(legend: str) -> set[str]:
    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))


def test_every_panel_query_returns_data_of_its_shape(
    ingress: Proc, worker: Proc, prometheus: PrometheusFactory, tmp_path: Path
) -> None:
    prom: Prometheus = prometheus({
        JOB_INGRESS: [f"127.0.0.1:{ingress.metrics_port}"],
        JOB_WORKER: [f"127.0.0.1:{worker.metrics_port}"],
    })  # fmt: skip
    wait_value(prom, "sum(up)", lambda v: v == 2, 60)
    # The fixtures' processes serve the whole session: count from what they had.
    commands = "sum(bayou_agent_app_commands_sent_total)"
    answered = 'sum(bayou_agent_commands_total{status="acknowledged"}) or vector(0)'
    before = wait_value(prom, commands, lambda v: v >= 0, 30)
    answered_before = wait_value(prom, answered, lambda v: v >= 0, 30)
    _drive(ingress)
    # The traffic is in Prometheus, with two scrapes after it for rate() to see it move.
    wait_value(prom, commands, lambda v: v >= before + 4, 60)
    wait_value(prom, answered, lambda v: v >= answered_before + 4, 60)
    time.sleep(2.5)

    targets = _targets()
    assert {uid for uid, *_ in targets} == {
        "bayou-overview", "bayou-ingress", "bayou-agents", "bayou-fleet",
    }  # fmt: skip
    failures: list[str] = []
    for uid, title, expr, legend, variables in targets:
        query = expand(expr, variables)
        result: list[Any] = prom.query(query)
        if not result:
            failures.append(f"{uid} / {title}: no data from {query}")
            continue
        for series in result:
            missing = _legend_labels(legend) - set(series["metric"]) - {"instance"}
            if "instance" in _legend_labels(legend) and "instance" not in series["metric"]:
                missing.add("instance")
            if missing:
                failures.append(f"{uid} / {title}: series {series['metric']} lacks {missing}")
    assert not failures, "\n".join(failures)

    # The traffic shows where it went (not only zeros).
    assert (prom.value("sum(rate(bayou_ingress_messages_in_total[1m]))") or 0) > 0
    dead = 'sum(increase(bayou_agent_dead_letters_total{reason="invalid"}[1m]))'
    assert (prom.value(dead) or 0) > 0
    assert prom.query(
        "histogram_quantile(0.99, sum by (group, le) (rate("
        'bayou_agent_command_latency_seconds_bucket{app="demo"}[1m])))'
    )

    out = tmp_path / "png"
    done = subprocess.run(
        [*BAYOU, "dashboards", "snapshot", "--prometheus-url", prom.url, "--out", str(out),
         "--minutes", "2"],
        env=bayou_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [f"{uid}.png" for uid in sorted({u for u, *_ in targets})]
    assert all((out / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
