"""A client's in-flight window: beyond it, it catches up from Kafka, not from broker memory."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from bayou.embedded import EmbeddedKafka
from bayou.metrics_scrape import metric_value
from bayou.processes import stop_process
from ingress.wire import codec
from tests.conftest import start_ingress
from tests.helpers import Mqtt
from tests.test_mqtt_sessions import _connect

pytestmark = pytest.mark.integration


def _publishes(s: socket.socket, framer: codec.Framer, want: int) -> list[tuple[int, bytes]]:
    """Read until ``want`` PUBLISH packets came (or the socket times out)."""
    got: list[tuple[int, bytes]] = []
    while len(got) < want:
        try:
            data = s.recv(65536)
        except TimeoutError:
            break
        assert data
        for pkt in framer.feed(data):
            if pkt.type == codec.PUBLISH:
                _, _, pid, _, _, payload = codec.decode_publish(pkt.flags, pkt.body)
                got.append((pid, payload))
    return got


def test_max_inflight_messages_then_catch_up_in_order(kafka: EmbeddedKafka, tmp_path: Path) -> None:
    node = start_ingress(kafka.bootstrap, tmp_path / "n.log", BAYOU_MAX_INFLIGHT_MESSAGES="5")
    try:
        topic = f"win/{uuid.uuid4().hex[:8]}"
        s = socket.create_connection(("127.0.0.1", node.mqtt_port), timeout=10)
        s.sendall(_connect(f"slow-{uuid.uuid4().hex[:6]}", clean=True))
        assert s.recv(4) == b"\x20\x02\x00\x00"
        t = topic.encode()
        body = b"\x00\x01" + len(t).to_bytes(2, "big") + t + b"\x01"
        s.sendall(b"\x82" + bytes((len(body),)) + body)
        assert s.recv(5) == b"\x90\x03\x00\x01\x01"
        pub = Mqtt(node.mqtt_port, f"p-{uuid.uuid4().hex[:6]}").connect()
        for i in range(20):
            pub.publish(topic, f"m{i:02d}".encode(), qos=1).wait_for_publish(10)
        pub.close()

        framer = codec.Framer()
        s.settimeout(1.5)
        received: list[bytes] = []
        while len(received) < 20:
            batch = _publishes(s, framer, 6)
            assert 0 < len(batch) <= 5, f"window of 5 exceeded or stalled: {len(batch)}"
            received += [p for _, p in batch]
            s.sendall(b"".join(codec.encode_ack(codec.PUBACK, pid) for pid, _ in batch))
        assert received == [f"m{i:02d}".encode() for i in range(20)]
        s.close()
        assert (metric_value(node.metrics_port, "bayou_ingress_catch_ups_total") or 0) >= 1
    finally:
        stop_process(node.proc)
