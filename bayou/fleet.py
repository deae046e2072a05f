"""The simulated fleet of ``bayou up --demo``: devices publishing readings, receiving commands.

Each device is a real MQTT client (amqtt's, MQTT 3.1.1) that publishes the demo telemetry
contract to ``sensors/{device}/telemetry`` at QoS 1 and listens on ``devices/{device}/commands``,
answering each command that has a ``command_id`` by the closed-loop convention (docs/agents.md,
"Commands with a response"); a monitor client counts alerts and window stats. A live one-line
summary shows the flow.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass

from amqtt.client import MQTTClient
from rich.console import Console
from rich.live import Live

from bayou.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class FleetCounts:
    """What the fleet saw so far."""

    published: int = 0
    stats: int = 0
    alerts: int = 0
    commands: int = 0
    answered: int = 0

    def line(self, devices: int, elapsed: float) -> str:
        """The one-line summary."""
        return (
            f"[bold]fleet[/bold] {devices} devices · {elapsed:5.0f}s · "
            f"messages in [cyan]{self.published}[/cyan] · window stats [cyan]{self.stats}[/cyan]"
            f" · alerts [yellow]{self.alerts}[/yellow] · "
            f"commands delivered [green]{self.commands}[/green]"
            f" · answered [green]{self.answered}[/green]"
        )


def reading(device_index: int, hot: bool, rng: random.Random) -> dict[str, float]:
    """One telemetry reading; hot devices run above the default 30 °C threshold."""
    base = 32.0 if hot else 22.0 + (device_index % 5)
    return {
        "temperature": round(base + rng.uniform(-1.5, 1.5), 2),
        "humidity": round(rng.uniform(30, 60), 1),
        "ts": time.time(),
    }


def _answer(topic: str, payload: bytes) -> str | None:
    """Where a device answers the command ``payload`` received on ``topic``: ``<topic>/response/
    <command_id>``, the 3.1.1 convention; None for a command that expects no answer."""
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    cid = body.get("command_id") if isinstance(body, dict) else None
    return f"{topic}/response/{cid}" if isinstance(cid, str) and cid else None


async def _device(
    uri: str, name: str, index: int, hot: bool, settings: Settings, counts: FleetCounts,
    stop: asyncio.Event,
) -> None:  # fmt: skip
    client = MQTTClient(client_id=name, config={"auto_reconnect": True})
    await client.connect(uri)
    await client.subscribe([(f"devices/{name}/commands", 1)])
    rng = random.Random(index)

    async def listen() -> None:
        while True:
            msg = await client.deliver_message()
            counts.commands += 1
            answer = _answer(msg.topic, bytes(msg.data)) if msg is not None else None
            if answer is not None:
                await client.publish(answer, b'{"ok":true}', qos=1)
                counts.answered += 1

    listener = asyncio.create_task(listen())
    try:
        while not stop.is_set():
            payload = json.dumps(reading(index, hot, rng)).encode()
            await client.publish(f"sensors/{name}/telemetry", payload, qos=1)
            counts.published += 1
            try:
                await asyncio.wait_for(stop.wait(), settings.fleet_interval_seconds)
            except TimeoutError:
                pass
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await client.disconnect()


async def _monitor(uri: str, counts: FleetCounts, stop: asyncio.Event) -> None:
    client = MQTTClient(client_id="bayou-fleet-monitor", config={"auto_reconnect": True})
    await client.connect(uri)
    await client.subscribe([("alerts/#", 1), ("sensors/+/stats", 1)])

    async def listen() -> None:
        # No timeout on deliver_message: amqtt leaves a reader task behind on timeout,
        # which then swallows the next message.
        while True:
            msg = await client.deliver_message()
            if msg is None:
                continue
            if msg.topic.startswith("alerts/"):
                counts.alerts += 1
            else:
                counts.stats += 1

    listener = asyncio.create_task(listen())
    try:
        await stop.wait()
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await client.disconnect()


async def run_fleet(settings: Settings, stop: asyncio.Event) -> FleetCounts:
    """Run the fleet and its live summary until ``stop`` is set."""
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.ERROR)
    uri = f"mqtt://{settings.mqtt_host}:{settings.mqtt_port}/"
    counts = FleetCounts()
    n = settings.fleet_devices
    tasks = [asyncio.create_task(_monitor(uri, counts, stop))]
    tasks += [
        asyncio.create_task(
            _device(uri, f"device-{i:03d}", i, i < settings.fleet_hot_devices, settings, counts,
                    stop)
        )
        for i in range(n)
    ]  # fmt: skip
    console = Console(highlight=False, soft_wrap=True)
    t0 = time.monotonic()
    if console.is_terminal:
        with Live(counts.line(n, 0), console=console, refresh_per_second=2) as live:
            while not stop.is_set():
                await _tick(stop, 0.5)
                live.update(counts.line(n, time.monotonic() - t0))
    else:
        # Not a terminal (logs, CI): a plain line every 5 s instead of a redrawn one.
        while not stop.is_set():
            await _tick(stop, 5.0)
            console.print(counts.line(n, time.monotonic() - t0))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for r in results:
        if isinstance(r, Exception):
            log.warning("fleet client ended with %s", r)
    return counts


async def _tick(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
