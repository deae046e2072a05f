"""Floods against a real `bayou ingress` process over loopback sockets: idle sockets that never
send CONNECT, slowloris, too many connections, too many connections from one address, and
subscribers that never read while others publish tens of megabytes.

Several source addresses are loopback addresses of their own (127.0.x.y): Linux routes all of
127/8 to lo, so the per-source limit sees distinct clients without any network set up.
"""

from __future__ import annotations

import resource
import select
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bayou.embedded import EmbeddedKafka
from bayou.metrics_scrape import metric_value
from bayou.processes import stop_process
from ingress.wire import codec
from tests.conftest import Proc, start_ingress
from tests.helpers import Mqtt, wait_until
from tests.test_mqtt_conformance import _connect_packet, _subscribe_packet

pytestmark = pytest.mark.integration

IDLE_SOCKETS = 3000
CONNECT_TIMEOUT = 3.0
ANONYMOUS = {"BAYOU_ALLOW_ANONYMOUS": "true"}


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def _refusals(node: Proc, limit: str) -> float:
    return metric_value(node.metrics_port, "bayou_limit_refusals_total", {"limit": limit}) or 0.0


def _connections(node: Proc) -> float | None:
    return metric_value(node.metrics_port, "bayou_ingress_connections")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _max_open_files(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError(f"no open-file limit for {pid}")


def _raise_nofile(want: int) -> None:
    """Raise this process's open-file limit (children started after it inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def _sock(port: int, source: str = "127.0.0.1", rcvbuf: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        # Before connect(): the window the client announces is taken from it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((source, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


def _closed_by_node(s: socket.socket, timeout: float) -> bool:
    """True if the node closes ``s`` within ``timeout`` without sending anything first."""
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


class Client:
    """A raw-socket MQTT client: CONNECT, SUBSCRIBE, then it reads only when told to."""

    def __init__(self, port: int, source: str = "127.0.0.1", rcvbuf: int = 0) -> None:
        self.sock = _sock(port, source, rcvbuf)
        self.framer = codec.Framer(max_size=1 << 28)
        self.packets: list[codec.Packet] = []

    def _next(self, timeout: float) -> codec.Packet:
        self.sock.settimeout(timeout)
        while not self.packets:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("closed by the node")
            self.packets += self.framer.feed(data)
        return self.packets.pop(0)

    def connect(self, client_id: str) -> None:
        self.sock.sendall(_connect_packet(client_id, keep_alive=0))
        pkt = self._next(10)
        assert pkt.type == codec.CONNACK and pkt.body == b"\x00\x00", pkt

    def subscribe(self, filt: str, qos: int) -> None:
        self.sock.sendall(_subscribe_packet(1, [(filt, qos)]))
        pkt = self._next(10)
        assert pkt.type == codec.SUBACK and pkt.body[2:] == bytes((qos,)), pkt

    def read_publishes(self, want: set[bytes], timeout: float) -> set[bytes]:
        """Read and acknowledge PUBLISH packets until every id in ``want`` came (the first
        8 bytes of each payload), or nothing came for ``timeout``; the ids seen."""
        seen: set[bytes] = set()
        while not want <= seen:
            try:
                pkt = self._next(timeout)
            except TimeoutError:
                break
            if pkt.type != codec.PUBLISH:
                continue
            _, qos, pid, _, _, payload = codec.decode_publish(pkt.flags, pkt.body)
            seen.add(payload[:8])
            if qos == 1:
                self.sock.sendall(codec.encode_ack(codec.PUBACK, pid))
        return seen

    def close(self) -> None:
        self.sock.close()


# --- sockets that never CONNECT ---------------------------------------------------------------


@pytest.fixture(scope="module")
def idle_node(kafka: EmbeddedKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """A node with a short CONNECT timeout and room for thousands of sockets."""
    _raise_nofile(2 * IDLE_SOCKETS + 1000)
    p = start_ingress(
        kafka.bootstrap,
        tmp_path_factory.mktemp("idle") / "ingress.log",
        BAYOU_CONNECT_TIMEOUT_SECONDS=str(CONNECT_TIMEOUT),
        **ANONYMOUS,
    )
    yield p
    stop_process(p.proc)


def test_thousands_of_idle_sockets_are_closed_after_the_connect_timeout(idle_node: Proc) -> None:
    """3,000 sockets that never send CONNECT: clients that did connect keep publishing and
    receiving meanwhile, and every idle socket is closed once the timeout passed, counted."""
    assert _max_open_files(idle_node.proc.pid) > IDLE_SOCKETS + 500
    topic = f"idle/{_uid()}"
    sub = Mqtt(idle_node.mqtt_port, f"s-{_uid()}").connect()
    sub.subscribe(topic, 1)
    pub = Mqtt(idle_node.mqtt_port, f"p-{_uid()}").connect()
    before = _refusals(idle_node, "connect_timeout")
    rss_before = _rss_kib(idle_node.proc.pid)
    idle = [_sock(idle_node.mqtt_port) for _ in range(IDLE_SOCKETS)]
    try:
        wait_until(
            lambda: (
                (_connections(idle_node) or 0) >= IDLE_SOCKETS + 2
                or _refusals(idle_node, "connect_timeout") > before
            ),
            30,
            "idle sockets accepted",
        )
        rss_idle = _rss_kib(idle_node.proc.pid)
        for i in range(50):
            pub.publish(topic, f"m{i}".encode(), qos=1).wait_for_publish(10)
        for i in range(50):
            assert sub.expect(lambda m: m.topic == topic).payload == f"m{i}".encode()

        wait_until(
            lambda: _refusals(idle_node, "connect_timeout") >= before + IDLE_SOCKETS,
            60,
            "idle sockets closed by the CONNECT timeout",
        )
        assert _refusals(idle_node, "connect_timeout") == before + IDLE_SOCKETS
        for s in idle:
            assert _closed_by_node(s, 10)
        wait_until(lambda: _connections(idle_node) == 2, 10, "only the two clients left")
        # Clients that sent CONNECT are not subject to the timeout.
        pub.publish(topic, b"after", qos=1).wait_for_publish(10)
        assert sub.expect(lambda m: m.topic == topic).payload == b"after"
        print(
            f"\nVmRSS of the node: {rss_before} KiB before, {rss_idle} KiB with "
            f"{IDLE_SOCKETS} idle sockets, {_rss_kib(idle_node.proc.pid)} KiB after they closed"
        )
    finally:
        for s in idle:
            s.close()
        sub.close()
        pub.close()


def test_slowloris_connect_one_byte_at_a_time_is_closed_at_the_timeout(idle_node: Proc) -> None:
    """A CONNECT trickled byte by byte (each byte is activity) is still closed at the CONNECT
    timeout, before it is complete, and never gets a CONNACK."""
    before = _refusals(idle_node, "connect_timeout")
    packet = _connect_packet(f"slow-{_uid()}-{'x' * 20}")
    pause = 4 * CONNECT_TIMEOUT / len(packet)  # the whole packet would take 4 timeouts
    s = _sock(idle_node.mqtt_port)
    sent = 0
    closed = False
    try:
        while sent < len(packet):
            try:
                s.sendall(packet[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sent += 1
            readable, _, _ = select.select([s], [], [], pause)
            if readable:
                assert _closed_by_node(s, 1), "the node answered a partial CONNECT"
                closed = True
                break
    finally:
        s.close()
    assert closed and sent < len(packet)
    assert _refusals(idle_node, "connect_timeout") == before + 1


# --- max connections and connect rate ---------------------------------------------------------

MAX_CONNECTIONS = 5
BURST = 3


@pytest.fixture(scope="module")
def tight_node(kafka: EmbeddedKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """A node for 5 connections, 3 at once per source address then one per 20 s."""
    p = start_ingress(
        kafka.bootstrap,
        tmp_path_factory.mktemp("tight") / "ingress.log",
        BAYOU_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        BAYOU_CONNECT_RATE_PER_SOURCE="0.05",
        BAYOU_CONNECT_BURST_PER_SOURCE=str(BURST),
        BAYOU_CONNECT_TIMEOUT_SECONDS="60",
        **ANONYMOUS,
    )
    yield p
    stop_process(p.proc)


def test_max_connections_refuses_at_once_then_admits_again(tight_node: Proc) -> None:
    """Beyond max connections a socket is closed before anything is read (no CONNACK: it sent
    no CONNECT), counted; once a client left, a new one connects."""
    clients = []
    for i in range(MAX_CONNECTIONS):
        c = Client(tight_node.mqtt_port, source=f"127.0.1.{i + 1}")
        c.connect(f"c{i}-{_uid()}")
        clients.append(c)
    before = _refusals(tight_node, "max_connections")
    extra = _sock(tight_node.mqtt_port, source="127.0.1.100")
    try:
        extra.sendall(_connect_packet(f"x-{_uid()}"))
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert _closed_by_node(extra, 10)
    extra.close()
    assert _refusals(tight_node, "max_connections") == before + 1
    clients.pop().close()
    wait_until(lambda: _connections(tight_node) == MAX_CONNECTIONS - 1, 10, "a client left")
    again = Client(tight_node.mqtt_port, source="127.0.1.101")
    again.connect(f"again-{_uid()}")
    clients.append(again)
    assert _connections(tight_node) == MAX_CONNECTIONS
    for c in clients:
        c.close()
    wait_until(lambda: _connections(tight_node) == 0, 10, "all clients gone")


def test_connect_rate_per_source_address(tight_node: Proc) -> None:
    """One address gets its burst of new connections, then is refused (counted); another
    address is not affected."""
    before = _refusals(tight_node, "connect_rate")
    source = "127.0.2.1"
    kept = [_sock(tight_node.mqtt_port, source=source) for _ in range(BURST)]
    wait_until(lambda: _connections(tight_node) == BURST, 10, "the burst accepted")
    refused = _sock(tight_node.mqtt_port, source=source)
    assert _closed_by_node(refused, 10)
    refused.close()
    assert _refusals(tight_node, "connect_rate") == before + 1
    other = Client(tight_node.mqtt_port, source="127.0.2.2")
    other.connect(f"other-{_uid()}")
    assert _connections(tight_node) == BURST + 1
    other.close()
    for s in kept:
        s.close()
    wait_until(lambda: _connections(tight_node) == 0, 10, "all sockets gone")


# --- subscribers that never read --------------------------------------------------------------

PAYLOAD = 20 * 1024
MESSAGES = 2500  # 50 MB published in all
NON_READERS_QOS0 = 10


class RssSampler(threading.Thread):
    """The highest VmRSS of ``pid`` seen while it runs."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = _rss_kib(pid)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            self.peak = max(self.peak, _rss_kib(self.pid))


def test_subscribers_that_never_read_do_not_grow_memory_and_lose_nothing_acknowledged(
    fresh_kafka: EmbeddedKafka, tmp_path: Path
) -> None:
    """Ten QoS 0 subscribers to ``#`` and one QoS 1 subscriber that do not read (tiny receive
    buffers) while 50 MB are published at QoS 1: a reading subscriber gets everything, the
    node's memory grows by far less than what the non-readers were sent (their QoS 0 messages
    are dropped, counted), and the QoS 1 non-reader, once it reads, gets every message."""
    node = start_ingress(
        fresh_kafka.bootstrap, tmp_path / "ingress.log", BAYOU_MAX_WRITE_BUFFER="65536", **ANONYMOUS
    )
    stalled: list[Client] = []
    reader = pubs = None
    try:
        prefix = f"flood/{_uid()}"
        for i in range(NON_READERS_QOS0):
            c = Client(node.mqtt_port, rcvbuf=4096)
            c.connect(f"q0-{i}-{_uid()}")
            c.subscribe("#", 0)
            stalled.append(c)
        slow = Client(node.mqtt_port, rcvbuf=4096)
        stalled.append(slow)
        slow.connect(f"q1-{_uid()}")
        slow.subscribe(f"{prefix}/#", 1)
        reader = Client(node.mqtt_port)
        reader.connect(f"r-{_uid()}")
        reader.subscribe(f"{prefix}/#", 1)
        pubs = [Mqtt(node.mqtt_port, f"p{i}-{_uid()}") for i in range(2)]
        for p in pubs:
            p.client.max_inflight_messages_set(200)
            p.connect()
        # Warm up the node's Kafka paths before the baseline.
        pubs[0].publish(f"{prefix}/warm", b"w" * PAYLOAD, qos=1).wait_for_publish(10)
        assert reader.read_publishes({b"w" * 8}, 10) == {b"w" * 8}
        baseline = _rss_kib(node.proc.pid)
        sampler = RssSampler(node.proc.pid)
        sampler.start()

        ids = {f"{i:08d}".encode() for i in range(MESSAGES)}
        infos = []
        filler = b"." * (PAYLOAD - 8)
        for i in range(MESSAGES):
            pub = pubs[i % 2]
            infos.append(pub.publish(f"{prefix}/{i % 7}", f"{i:08d}".encode() + filler, qos=1))
        got = reader.read_publishes(ids, 30)
        for info in infos:
            info.wait_for_publish(30)
        sampler.done.set()
        sampler.join()
        assert got >= ids, f"the reading subscriber missed {len(ids - got)} messages"
        growth_mb = (sampler.peak - baseline) / 1024
        published_mb = MESSAGES * PAYLOAD / 2**20
        unread_mb = published_mb * (NON_READERS_QOS0 + 1)
        print(
            f"\nVmRSS of the node: {baseline / 1024:.1f} MiB before, peak "
            f"{sampler.peak / 1024:.1f} MiB ({growth_mb:+.1f}) while {published_mb:.0f} MiB "
            f"were published and {unread_mb:.0f} MiB were due to subscribers not reading"
        )
        # Bounded, not fast: Kafka's client buffers alone take tens of MiB in such a burst;
        # queued for the non-readers it would have been several hundred.
        assert growth_mb < unread_mb / 3, f"RSS grew {growth_mb:.1f} MiB"
        assert _refusals(node, "write_buffer") > 0

        # The QoS 1 subscriber reads again: every message published while it stalled comes.
        seen = slow.read_publishes(ids, 30)
        assert seen >= ids, f"the stalled QoS 1 subscriber missed {len(ids - seen)} messages"
    finally:
        for c in stalled:
            c.close()
        if reader is not None:
            reader.close()
        for p in pubs or []:
            p.close()
        stop_process(node.proc)
