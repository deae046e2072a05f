"""Live fleet data: what the Fleet dashboard's MQTT panels see, over the WebSocket listener.

The Grafana MQTT data source is an MQTT client; no Grafana runs here, so a client subscribes
the way it would (the filters of the Fleet dashboard's MQTT targets, over ``ws://…/mqtt``, with
:func:`bayou.mqtt_sample.collect`, which ``bayou dashboards snapshot`` uses) on a real ingress
node with a real worker, while a device's readings close a window: the window's stats reach the
panel within seconds of the closing reading (the figure is printed; no timed assert).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bayou.embedded import EmbeddedKafka
from bayou.mqtt_sample import collect
from bayou.net import free_port
from bayou.processes import stop_process
from dashboards.snapshot import mqtt_filters
from tests.conftest import Proc, start_ingress
from tests.helpers import Mqtt

pytestmark = pytest.mark.integration

# What the shipped Fleet dashboard's MQTT panels subscribe to.
FLEET = Path(__file__).resolve().parent.parent / "dashboards/generated/dashboards/bayou-fleet.json"
LIVE_FILTERS = sorted({f for _, f in mqtt_filters(json.loads(FLEET.read_text()))})


@pytest.fixture
def ws_ingress(kafka: EmbeddedKafka, tmp_path: Path) -> Iterator[tuple[Proc, int]]:
    ws_port = free_port()
    p = start_ingress(kafka.bootstrap, tmp_path / "ingress.log", BAYOU_WS_PORT=str(ws_port))
    try:
        yield p, ws_port
    finally:
        stop_process(p.proc)


def test_a_closed_windows_stats_reach_a_websocket_subscriber_of_the_fleet_panels(
    ws_ingress: tuple[Proc, int], worker: Proc
) -> None:
    assert LIVE_FILTERS == ["alerts/+", "sensors/+/stats"]
    node, ws_port = ws_ingress
    dev = f"live-{uuid.uuid4().hex[:8]}"
    # A window half a minute ahead of now: ahead of other tests' readings, and short of
    # test_demo_pipeline's window a minute ahead (reading up to +43 s here never closes it or
    # makes its readings late: they share the worker and its partitions' watermarks).
    start = math.ceil(time.time() / 10) * 10 + 30
    device = Mqtt(node.mqtt_port, dev).connect()
    sent_at: list[float] = []
    arrivals: list[float] = []

    async def drive() -> list[tuple[str, object]]:
        panel = asyncio.create_task(
            collect(
                f"ws://127.0.0.1:{ws_port}/mqtt",
                LIVE_FILTERS,
                8.0,
                client_id=f"g-{dev}",
                arrivals=arrivals,
            )
        )
        await asyncio.sleep(1.0)  # subscribed
        for temp, offset in ((20.0, 1), (24.0, 5), (40.0, 9)):
            device.publish(f"sensors/{dev}/telemetry", _reading(temp, start + offset))
        # Event time past end + grace closes the window.
        sent_at.append(time.monotonic())
        device.publish(f"sensors/{dev}/telemetry", _reading(21.0, start + 13))
        return await panel

    try:
        seen = asyncio.run(drive())
    finally:
        device.close()
    mine = [(t, m) for t, m in seen if t.endswith(f"/{dev}/stats") or t == f"alerts/{dev}"]
    stats = [m for t, m in mine if t == f"sensors/{dev}/stats"]
    assert stats == [
        {"device": dev, "window_start": start, "window_end": start + 10, "count": 3,
         "mean": 28.0, "min": 20.0, "max": 40.0},
    ], seen  # fmt: skip
    assert any(t == f"alerts/{dev}" for t, _ in mine), "the hot reading's alert"
    at = arrivals[next(i for i, (t, _) in enumerate(seen) if t == f"sensors/{dev}/stats")]
    print(f"closing reading → stats on the panel's subscription: {at - sent_at[0]:.3f} s")


def _reading(temperature: float, ts: float) -> bytes:
    return json.dumps({"temperature": temperature, "humidity": 40.0, "ts": ts}).encode()
