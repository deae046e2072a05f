"""Collect what an MQTT subscription sees for a while: the live panels of a dashboard snapshot.

``bayou dashboards snapshot`` draws the Fleet dashboard's MQTT panels (the Grafana MQTT data
source's view of ``sensors/+/stats`` and ``alerts/+``) from the messages collected here over the
same listener Grafana would use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import quote

from amqtt.client import MQTTClient


def _decoded(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode("utf-8", "replace")


async def collect(
    uri: str,
    filters: list[str],
    seconds: float,
    *,
    username: str | None = None,
    password: str | None = None,
    client_id: str = "bayou-snapshot",
    arrivals: list[float] | None = None,
) -> list[tuple[str, Any]]:
    """Subscribe to ``filters`` at QoS 0 on ``uri`` (``mqtt://host:port`` or
    ``ws://host:port/path``) for ``seconds``; the messages seen, oldest first, JSON decoded when
    they are JSON (``arrivals``, if given, gets each one's ``time.monotonic()``)."""
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if username is not None:
        scheme, _, rest = uri.partition("://")
        secret = f":{quote(password, safe='')}" if password is not None else ""
        uri = f"{scheme}://{quote(username, safe='')}{secret}@{rest}"
    client = MQTTClient(client_id=client_id, config={"auto_reconnect": False})
    await client.connect(uri)
    seen: list[tuple[str, Any]] = []

    async def listen() -> None:
        # No timeout on deliver_message: amqtt leaves a reader task behind on timeout, which
        # then swallows the next message (as in bayou.fleet).
        while True:
            msg = await client.deliver_message()
            if msg is not None:
                seen.append((msg.topic, _decoded(bytes(msg.data or b""))))
                if arrivals is not None:
                    arrivals.append(time.monotonic())

    await client.subscribe([(f, 0) for f in filters])
    listener = asyncio.create_task(listen())
    try:
        await asyncio.sleep(seconds)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await client.disconnect()
    return seen
