"""The TLS and WebSocket listeners with real parts: Kafka, a node, paho and websockets clients.

The node runs in this process on its own event loop (a thread), with the listeners started by
``start_extra_listeners`` beside it; the last tests run ``bayou ingress`` as a process, whose
``IngressNode.start`` starts the listeners itself.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as paho
import pytest
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect as ws_connect

from bayou.embedded import EmbeddedKafka
from bayou.net import free_port, port_in_use
from bayou.processes import stop_process
from ingress.config import IngressConfig
from ingress.node import IngressNode
from ingress.security.config import AuthConfig, SecurityConfig
from ingress.wire import codec
from ingress.wire.connection import MQTTConnection
from ingress.wire.listeners import (
    Listener,
    ListenerError,
    close_listeners,
    start_extra_listeners,
    tls_context,
)
from tests.conftest import bayou_env, start_bayou, start_ingress, start_kafka
from tests.helpers import Mqtt, wait_until

pytestmark = pytest.mark.integration

T = TypeVar("T")
HOST = "127.0.0.1"


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (openssl CLI)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@dataclass
class Node:
    """An in-process ingress node with its TLS and WebSocket listeners."""

    node: IngressNode
    loop: asyncio.AbstractEventLoop
    listeners: list[Listener]
    mqtt_port: int
    tls_port: int
    ws_port: int
    cert: Path

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def has_client(self, client_id: str) -> bool:
        async def known() -> bool:
            return any(c.client_id == client_id for c in self.node.connections)

        return self.run(known())


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedKafka]:
    k = start_kafka(tmp_path_factory.mktemp("kafka") / "tansu.log")
    yield k
    k.stop()


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def node(kafka: EmbeddedKafka, cert: tuple[Path, Path]) -> Iterator[Node]:
    config = IngressConfig(
        kafka_bootstrap=kafka.bootstrap, mqtt_port=free_port(), metrics_port=None,
        node_id="listeners-test",
        security=SecurityConfig(auth=AuthConfig(allow_anonymous=True)),
    )  # fmt: skip
    # The node itself gets no TLS/WS ports, so this works whether or not it starts them itself.
    extra = config.model_copy(
        update={"tls_port": free_port(), "ws_port": free_port(), "tls_certfile": cert[0],
                "tls_keyfile": cert[1]}
    )  # fmt: skip
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="ingress-node", daemon=True)
    thread.start()
    ingress = IngressNode(config)

    async def start() -> list[Listener]:
        await ingress.start()
        return await start_extra_listeners(extra, lambda: MQTTConnection(ingress))

    listeners = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    assert extra.tls_port and extra.ws_port
    n = Node(ingress, loop, listeners, config.mqtt_port, extra.tls_port, extra.ws_port, cert[0])
    yield n

    async def stop() -> None:
        await ingress.stop()
        await close_listeners(listeners)

    try:
        n.run(stop())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def tls_client(port: int, cert: Path, cid: str) -> Mqtt:
    m = Mqtt(port, cid)
    m.client.tls_set(ca_certs=str(cert))
    return m


def ws_client(port: int, cid: str, path: str = "/mqtt") -> Mqtt:
    m = Mqtt(port, cid, transport="websockets")
    m.client.ws_set_options(path=path)
    return m


def connect_packet(client_id: str) -> bytes:
    """An MQTT 3.1.1 CONNECT, clean session, keep-alive 60 s."""
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    return bytes([0x10, len(body)]) + body


# TLS and WebSocket together --------------------------------------------------------------------


def test_tls_publisher_reaches_websocket_subscriber_through_kafka(node: Node) -> None:
    topic = f"listeners/{_uid()}/temp"
    sub = ws_client(node.ws_port, f"ws-sub-{_uid()}").connect()
    pub = tls_client(node.tls_port, node.cert, f"tls-pub-{_uid()}").connect()
    try:
        assert [int(getattr(c, "value", c)) for c in sub.subscribe("listeners/#", 1)] == [1]
        info = pub.publish(topic, b"over tls", qos=1)
        info.wait_for_publish(10)
        assert info.is_published()  # PUBACK over TLS: the record is in Kafka
        msg = sub.expect(lambda m: m.topic == topic)
        assert (msg.payload, msg.qos) == (b"over tls", 1)
    finally:
        sub.close()
        pub.close()


def test_websocket_publisher_reaches_tls_and_tcp_subscribers(node: Node) -> None:
    topic = f"listeners/{_uid()}/cmd"
    tls_sub = tls_client(node.tls_port, node.cert, f"tls-sub-{_uid()}").connect()
    tcp_sub = Mqtt(node.mqtt_port, f"tcp-sub-{_uid()}").connect()
    pub = ws_client(node.ws_port, f"ws-pub-{_uid()}").connect()
    try:
        tls_sub.subscribe(topic, 0)
        tcp_sub.subscribe(topic, 1)
        pub.publish(topic, b"x" * 70_000, qos=1).wait_for_publish(10)  # spans many TLS records
        assert tls_sub.expect(lambda m: m.topic == topic).payload == b"x" * 70_000
        assert tcp_sub.expect(lambda m: m.topic == topic).payload == b"x" * 70_000
    finally:
        for c in (tls_sub, tcp_sub, pub):
            c.close()


def test_tls_refuses_a_client_that_does_not_trust_the_certificate(node: Node) -> None:
    ctx = ssl.create_default_context()  # system CAs only: the self-signed cert is not trusted
    with (
        socket.create_connection((HOST, node.tls_port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ctx.wrap_socket(raw, server_hostname=HOST)


def test_tls_is_1_2_or_later(node: Node, cert: tuple[Path, Path]) -> None:
    assert tls_context(*cert).minimum_version == ssl.TLSVersion.TLSv1_2
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(node.cert)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection((HOST, node.tls_port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        assert tls.version() == "TLSv1.2"


# WebSocket framing and handshake ---------------------------------------------------------------


def test_websocket_packets_need_not_align_with_frames(node: Node) -> None:
    url = f"ws://{HOST}:{node.ws_port}/mqtt"
    with ws_connect(url, subprotocols=["mqtt"], compression=None) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "mqtt"  # [MQTT-6.0.0-4]
        pkt = connect_packet(f"raw-{_uid()}")
        ws.send(pkt[:5])  # a CONNECT split over two frames
        ws.send(pkt[5:])
        assert ws.recv(timeout=10) == codec.encode_connack(0, session_present=False)
        ws.send(b"\xc0\x00" * 2)  # two packets in one frame
        got = b""
        while len(got) < 4:
            data = ws.recv(timeout=10)
            assert isinstance(data, bytes)  # [MQTT-6.0.0-1]: binary frames only
            got += data
        assert got == codec.PINGRESP_BYTES * 2


def test_websocket_text_frame_closes_the_connection(node: Node) -> None:
    url = f"ws://{HOST}:{node.ws_port}/mqtt"
    with ws_connect(url, subprotocols=["mqtt"]) as ws:  # type: ignore[list-item]
        ws.send(connect_packet(f"raw-{_uid()}"))
        ws.recv(timeout=10)
        ws.send("not binary")  # [MQTT-6.0.0-1]
        with pytest.raises(ConnectionClosedError) as err:
            ws.recv(timeout=10)
        assert err.value.rcvd is not None and err.value.rcvd.code == 1003


@pytest.mark.parametrize(
    ("path", "subprotocols", "status"),
    [
        ("/other", ["mqtt"], 404),
        ("/", ["mqtt"], 404),
        ("/mqtt", None, 400),  # [MQTT-6.0.0-3]: the client must offer "mqtt"
        ("/mqtt", ["mqttv3.1"], 400),
    ],
)
def test_websocket_handshake_refused(
    node: Node, path: str, subprotocols: list[Any] | None, status: int
) -> None:
    with pytest.raises(InvalidStatus) as err:
        ws_connect(f"ws://{HOST}:{node.ws_port}{path}", subprotocols=subprotocols)
    assert err.value.response.status_code == status


# paho 2.2 does not close its socket when the WebSocket handshake fails.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_paho_on_another_websocket_path_is_refused(node: Node) -> None:
    m = ws_client(node.ws_port, f"ws-{_uid()}", path="/elsewhere")
    with pytest.raises(paho.WebsocketConnectionError):
        m.client.connect(HOST, node.ws_port)
    del m
    gc.collect()  # paho's socket is finalised in this test, under the filter above


# Failures stay with the client that caused them --------------------------------------------------


def test_plain_mqtt_on_the_tls_port_fails_cleanly_and_others_go_on(node: Node) -> None:
    topic = f"listeners/{_uid()}/after"
    sub = tls_client(node.tls_port, node.cert, f"tls-sub-{_uid()}").connect()
    try:
        sub.subscribe(topic, 1)
        plain_id = f"plain-{_uid()}"
        with socket.create_connection((HOST, node.tls_port), timeout=10) as plain:
            plain.sendall(connect_packet(plain_id))
            try:
                while plain.recv(4096):  # at most a TLS alert, then the server closes
                    pass
            except ConnectionResetError:
                pass
        # The failed handshake never became an MQTT connection.
        assert not node.has_client(plain_id)
        pub = tls_client(node.tls_port, node.cert, f"tls-pub-{_uid()}").connect()
        try:
            pub.publish(topic, b"still here", qos=1).wait_for_publish(10)
        finally:
            pub.close()
        assert sub.expect(lambda m: m.topic == topic).payload == b"still here"
    finally:
        sub.close()


def test_websocket_client_leaving_is_forgotten(node: Node) -> None:
    cid = f"ws-{_uid()}"
    c = ws_client(node.ws_port, cid).connect()
    wait_until(lambda: node.has_client(cid), 10, "WebSocket client known to the node")
    c.close()
    wait_until(lambda: not node.has_client(cid), 10, "WebSocket client forgotten")


# Configuration errors --------------------------------------------------------------------------


def _config(**kw: Any) -> IngressConfig:
    return IngressConfig(kafka_bootstrap="unused:9092", metrics_port=None, **kw)


async def test_missing_certificate_names_the_setting(tmp_path: Path) -> None:
    tls_port, ws_port = free_port(), free_port()
    missing = tmp_path / "missing.pem"
    cfg = _config(tls_port=tls_port, tls_certfile=missing, tls_keyfile=missing, ws_port=ws_port)
    with pytest.raises(ListenerError, match=r"BAYOU_TLS_CERTFILE=.*missing\.pem: cannot read"):
        await start_extra_listeners(cfg, asyncio.Protocol)
    assert not port_in_use(HOST, tls_port) and not port_in_use(HOST, ws_port)

    with pytest.raises(ListenerError, match="BAYOU_TLS_PORT is set but BAYOU_TLS_CERTFILE is not"):
        await start_extra_listeners(_config(tls_port=tls_port), asyncio.Protocol)


async def test_bad_key_names_the_setting(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    other_cert, other_key = make_cert(tmp_path)
    cfg = _config(tls_port=free_port(), tls_certfile=cert[0], tls_keyfile=other_key)
    with pytest.raises(ListenerError, match=r"BAYOU_TLS_KEYFILE=.*does not match"):
        await start_extra_listeners(cfg, asyncio.Protocol)
    cfg = _config(tls_port=free_port(), tls_certfile=cert[0], tls_keyfile=other_cert)
    with pytest.raises(ListenerError, match=r"BAYOU_TLS_KEYFILE=.*no PEM private key"):
        await start_extra_listeners(cfg, asyncio.Protocol)


async def test_taken_websocket_port_names_the_setting_and_leaves_nothing_open(
    cert: tuple[Path, Path],
) -> None:
    tls_port = free_port()
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        ws_port = taken.getsockname()[1]
        cfg = _config(tls_port=tls_port, tls_certfile=cert[0], tls_keyfile=cert[1],
                      ws_port=ws_port)  # fmt: skip
        with pytest.raises(ListenerError, match="BAYOU_WS_PORT"):
            await start_extra_listeners(cfg, asyncio.Protocol)
    assert not port_in_use(HOST, tls_port)


async def test_no_extra_listeners_by_default() -> None:
    assert await start_extra_listeners(_config(), asyncio.Protocol) == []


# `bayou ingress` as a process --------------------------------------------------------------------


def test_bayou_ingress_serves_tls_and_websocket(
    kafka: EmbeddedKafka, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    tls_port, ws_port = free_port(), free_port()
    p = start_ingress(
        kafka.bootstrap, tmp_path / "ingress.log", BAYOU_TLS_PORT=str(tls_port),
        BAYOU_TLS_CERTFILE=str(cert[0]), BAYOU_TLS_KEYFILE=str(cert[1]),
        BAYOU_WS_PORT=str(ws_port),
    )  # fmt: skip
    try:
        topic = f"listeners/{_uid()}/proc"
        sub = ws_client(ws_port, f"ws-sub-{_uid()}").connect()
        pub = tls_client(tls_port, cert[0], f"tls-pub-{_uid()}").connect()
        try:
            sub.subscribe(topic, 1)
            pub.publish(topic, b"via process", qos=1).wait_for_publish(10)
            assert sub.expect(lambda m: m.topic == topic).payload == b"via process"
        finally:
            sub.close()
            pub.close()
    finally:
        stop_process(p.proc)
    assert "Traceback" not in p.log_text()


def test_bayou_ingress_with_a_missing_certificate_exits_naming_the_setting(
    kafka: EmbeddedKafka, tmp_path: Path
) -> None:
    env = bayou_env(
        BAYOU_KAFKA_BOOTSTRAP=kafka.bootstrap, BAYOU_MQTT_PORT=str(free_port()),
        BAYOU_INGRESS_METRICS_PORT="0", BAYOU_TLS_PORT=str(free_port()),
        BAYOU_TLS_CERTFILE=str(tmp_path / "nope.pem"),
    )  # fmt: skip
    log = tmp_path / "ingress.log"
    proc = start_bayou(["ingress"], env, log)
    try:
        assert proc.wait(60) == 1
    finally:
        stop_process(proc)
    text = log.read_text()
    assert "BAYOU_TLS_CERTFILE=" in text and "nope.pem: cannot read it" in text, text
    assert "Traceback" not in text, text
