"""Test helpers: a real MQTT client (paho) with waits, Kafka reads, process utilities."""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as paho
from aiokafka import AIOKafkaConsumer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion

# The one scraper and the one stop helper; tests import them from here.


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass
class Mqtt:
    """A paho client over a real socket, with blocking waits for tests."""

    port: int
    client_id: str
    clean_session: bool = True
    transport: Literal["tcp", "websockets"] = "tcp"
    messages: queue.Queue[Received] = field(default_factory=queue.Queue)
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=self.clean_session,
            protocol=paho.MQTTv311,
            transport=self.transport,
        )
        if self.username is not None or self.password is not None:
            self.client.username_pw_set(self.username, self.password)
        self.client.on_message = self._on_message
        self.connack_flags = 0
        self.client.on_connect = self._on_connect
        self._subacks: queue.Queue[Any] = queue.Queue()
        self.client.on_subscribe = lambda c, u, mid, codes, props: self._subacks.put(codes)
        self._unsubacks: queue.Queue[int] = queue.Queue()
        self.client.on_unsubscribe = lambda c, u, mid, codes, props: self._unsubacks.put(mid)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connack_flags = 1 if getattr(flags, "session_present", False) else 0

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self.messages.put(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))

    def connect(self, keepalive: int = 30) -> Mqtt:
        self.client.connect("127.0.0.1", self.port, keepalive=keepalive)
        self.client.loop_start()
        deadline = time.monotonic() + 10
        while not self.client.is_connected():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.client_id} did not connect")
            time.sleep(0.01)
        return self

    def subscribe(self, topic: str, qos: int = 1) -> list[Any]:
        self.client.subscribe(topic, qos)
        return list(self._subacks.get(timeout=10))

    def unsubscribe(self, topic: str) -> None:
        """Unsubscribe and wait for the UNSUBACK (the node has dropped the subscription)."""
        self.client.unsubscribe(topic)
        self._unsubacks.get(timeout=10)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> paho.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos)

    def expect(
        self, pred: Callable[[Received], bool] = lambda m: True, timeout: float = 20
    ) -> Received:
        """The first received message matching ``pred``; skips others."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.client_id}: no matching message in {timeout}s")
            try:
                msg = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            if pred(msg):
                return msg

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # paho keeps its wake-up socket pair open after loop_stop(); left to the garbage
        # collector it raises ResourceWarning (an error here) in whichever test collects it.
        self.client._reset_sockets(sockpair_only=True)


def read_topic(bootstrap: str, topic: str, timeout: float = 10.0) -> list[Any]:
    """Every record currently in ``topic`` (from the beginning), read with aiokafka."""

    async def _read() -> list[Any]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                    enable_auto_commit=False, fetch_max_wait_ms=50)  # fmt: skip
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            if not parts:
                await consumer.topics()
                parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in parts]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            out: list[Any] = []
            # Read until a quiet period: Tansu's end offsets can under-report (DESIGN §10),
            # so do not stop at end_offsets.
            deadline = time.monotonic() + timeout
            quiet = 0
            while time.monotonic() < deadline and quiet < 3:
                batch = await consumer.getmany(timeout_ms=200)
                got = [r for recs in batch.values() for r in recs]
                out += got
                quiet = 0 if got else quiet + 1
            return out
        finally:
            await consumer.stop()

    return asyncio.run(_read())


def headers(record: Any) -> dict[str, bytes]:
    return {k: v for k, v in record.headers or ()}


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def children_of(pid: int) -> set[int]:
    """All descendant PIDs of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents[int(d.name)] = ppid
    out: set[int] = set()
    frontier = {pid}
    while frontier:
        nxt = {c for c, p in parents.items() if p in frontier}
        out |= nxt
        frontier = nxt
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
