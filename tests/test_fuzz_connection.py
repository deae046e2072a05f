"""Property-based fuzzing of the connection state machine (hypothesis; profiles in conftest).

:class:`MQTTConnection` runs in-process on a fresh event loop, over a fake transport that
records what is written. Its node is a small in-memory double of the ``ConnectionNode``
protocol whose producer keeps records in a list: it stands for the Kafka side, which the
integration tests (tests/test_mqtt_*.py) cover over real sockets and a real broker. The real
Inbound, RetainedStore and SubscriptionTable run on top of it.

Each example is a stream mixing valid packets and garbage, cut into arbitrary reads:
``data_received`` never raises, once the connection closed nothing more is written, every
call returns (no hang), and a stream of valid packets is answered as MQTT 3.1.1 says.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingress.config import IngressConfig
from ingress.contract import Headers
from ingress.inbound import Inbound
from ingress.kafka.producer import DoneCallback, IngestProducer
from ingress.routing.rules import Router
from ingress.security.config import AuthConfig, SecurityConfig
from ingress.security.guard import Guard
from ingress.state.retained import RetainedStore
from ingress.state.subscriptions import SubscriptionTable
from ingress.wire import codec
from ingress.wire.connection import MQTTConnection
from ingress.wire.control_packets import ConnectInfo
from tests.test_fuzz_codec import encode_connect

FUZZ = settings(max_examples=500)


class MemoryProducer(IngestProducer):
    """Keeps records in a list; acknowledges them on the next loop turn (or fails them)."""

    def __init__(self, fail: bool) -> None:  # no librdkafka producer behind it
        self.pending = 0
        self.fail = fail
        self.records: list[tuple[str, bytes, bytes | None]] = []

    def submit(
        self, topic: str, key: bytes, value: bytes | None, headers: Headers,
        done: DoneCallback | None,
    ) -> None:  # fmt: skip
        self.records.append((topic, key, value))
        if done is not None:
            exc = RuntimeError("Kafka is down") if self.fail else None
            asyncio.get_running_loop().call_soon(done, exc)


@dataclass
class MemoryShares:
    """The node's shared subscriptions, as the joins and leaves the connection asked for."""

    calls: list[tuple[str, str]] = field(default_factory=list)

    def join(self, conn: MQTTConnection, filt: str, qos: int) -> None:
        self.calls.append(("join", filt))

    def leave(self, conn: MQTTConnection, filt: str) -> None:
        self.calls.append(("leave", filt))

    def forget(self, conn: MQTTConnection) -> None:
        self.calls.append(("forget", ""))


@dataclass
class MemoryNode:
    """The ``ConnectionNode`` protocol over in-memory parts (the Kafka side is a list)."""

    producer: MemoryProducer
    config: IngressConfig = field(
        default_factory=lambda: IngressConfig(
            kafka_bootstrap="unused:0",
            max_packet_size=4096,
            security=SecurityConfig(auth=AuthConfig(allow_anonymous=True)),
        )
    )
    retained: RetainedStore = field(default_factory=RetainedStore)
    subscriptions: SubscriptionTable[MQTTConnection] = field(default_factory=SubscriptionTable)
    shares: MemoryShares = field(default_factory=MemoryShares)
    opened: int = 0
    closed: int = 0

    def __post_init__(self) -> None:
        self.guard = Guard.build(self.config.security)
        self.inbound = Inbound(Router([]), self.producer, self.retained, "bayou.retained")

    def connection_opened(self, conn: MQTTConnection) -> None:
        self.opened += 1

    def client_connected(self, conn: MQTTConnection, clean: bool) -> bool:
        return False

    def connection_closed(self, conn: MQTTConnection) -> None:
        self.closed += 1

    def assign_client_id(self) -> str:
        return "assigned-1"

    def subscriptions_changed(self) -> None:
        pass

    def window_opened(self, conn: MQTTConnection) -> None:
        pass

    def delay_will(self, client_id: str, seconds: float, publish: Any) -> None:
        publish()

    def replay_offsets(self, since_ms: int) -> asyncio.Future[dict[tuple[str, int], int]]:
        future: asyncio.Future[dict[tuple[str, int], int]] = asyncio.Future()
        future.set_result({})
        return future

    def start_replay(self, conn: MQTTConnection, filters: Any, starts: Any, since: int) -> bool:
        return True


class RecordingTransport(asyncio.Transport):
    """Records writes; ``close`` calls ``connection_lost`` on the next loop turn, as asyncio."""

    def __init__(self, protocol: MQTTConnection) -> None:
        super().__init__()
        self.protocol = protocol
        self.written: list[bytes] = []
        self.after_close: list[bytes] = []
        self.is_closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        (self.after_close if self.is_closed else self.written).append(bytes(data))

    def close(self) -> None:
        if not self.is_closed:
            self.is_closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self.is_closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


# --- the packets a client may send -----------------------------------------------------------

topics = st.sampled_from(["a", "a/b", "a/b/c", "$sys/x", "é/ü"])
filters = st.sampled_from(["a", "a/#", "+/b", "#", "a/+/c", "bad#", "a/b"])
pids = st.integers(1, 20)


def _packet(ptype: int, flags: int, body: bytes) -> bytes:
    return bytes(((ptype << 4) | flags,)) + codec.encode_remaining_length(len(body)) + body


def _s(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


@st.composite
def connect_packets(draw: st.DrawFn, accepted: bool = False) -> bytes:
    """CONNECT packets; ``accepted``: only ones the node accepts (no empty id without clean)."""
    will = draw(st.booleans())
    client_id = draw(st.sampled_from(["", "dev-1", "dev-2"]))
    clean = True if accepted and not client_id else draw(st.booleans())
    info = ConnectInfo(
        "MQTT", 4, client_id, clean_session=clean, keep_alive=draw(st.integers(0, 120)),
        will_topic=draw(topics) if will else None, will_message=b"bye" if will else None,
        will_qos=draw(st.integers(0, 2)) if will else 0,
    )  # fmt: skip
    return _packet(codec.CONNECT, 0, encode_connect(info))


publish_packets = st.builds(
    lambda t, q, pid, retain, payload: codec.encode_publish(t, payload, q, pid if q else 0, retain),
    topics, st.integers(0, 2), pids, st.booleans(), st.binary(max_size=8),
)  # fmt: skip
subscribe_packets = st.builds(
    lambda pid, fs: _packet(codec.SUBSCRIBE, 2, pid.to_bytes(2, "big")
                            + b"".join(_s(f) + bytes((q,)) for f, q in fs)),
    pids, st.lists(st.tuples(filters, st.integers(0, 2)), min_size=1, max_size=3),
)  # fmt: skip
unsubscribe_packets = st.builds(
    lambda pid, fs: _packet(codec.UNSUBSCRIBE, 2, pid.to_bytes(2, "big") + b"".join(map(_s, fs))),
    pids, st.lists(filters, min_size=1, max_size=3),
)  # fmt: skip
outbound_acks = st.builds(
    codec.encode_ack, st.sampled_from([codec.PUBACK, codec.PUBREC, codec.PUBCOMP]), pids
)
pubrels = st.builds(lambda pid: codec.encode_ack(codec.PUBREL, pid), pids)
pingreq = st.just(b"\xc0\x00")
disconnect = st.just(b"\xe0\x00")
garbage = st.binary(min_size=1, max_size=24)

# Valid packets after the CONNECT, none of which ends the connection by itself.
steady = st.one_of(publish_packets, subscribe_packets, unsubscribe_packets, pingreq)
anything = st.one_of(
    steady, connect_packets(), outbound_acks, pubrels, disconnect, garbage, garbage
)


def _cut(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    return [stream[a:b] for a, b in itertools.pairwise(points)] or [b""]


@dataclass
class Run:
    conn: MQTTConnection
    transport: RecordingTransport
    node: MemoryNode
    raised: list[BaseException]


def _drive(reads: list[bytes], fail_kafka: bool = False) -> Run:
    """Feed ``reads`` one by one, letting the loop run between them; then let it settle."""

    async def scenario() -> Run:
        node = MemoryNode(MemoryProducer(fail_kafka))
        conn = MQTTConnection(node)
        transport = RecordingTransport(conn)
        conn.connection_made(transport)
        raised: list[BaseException] = []
        for data in reads:
            try:
                conn.data_received(data)
            except Exception as exc:  # the property: never
                raised.append(exc)
            await asyncio.sleep(0)
        for _ in range(5):  # acks → flush → writes: a few loop turns
            await asyncio.sleep(0)
        return Run(conn, transport, node, raised)

    return asyncio.run(asyncio.wait_for(scenario(), 30))


def _packets(written: list[bytes]) -> list[codec.Packet]:
    return codec.Framer(max_size=1 << 20).feed(b"".join(written))


@FUZZ
@given(
    items=st.lists(anything, max_size=12),
    first=st.one_of(connect_packets(), anything),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
    fail_kafka=st.booleans(),
)
def test_arbitrary_streams_never_raise_and_nothing_is_written_after_close(
    items: list[bytes], first: bytes, cuts: list[int], fail_kafka: bool
) -> None:
    stream = first + b"".join(items)
    run = _drive(_cut(stream, cuts), fail_kafka)
    assert run.raised == []
    assert run.transport.after_close == []
    # The connection's idea of closed is the transport's, and a closed one was cleaned up.
    assert run.conn.closed == run.transport.is_closed
    if run.transport.is_closed:
        assert run.node.closed == 1 and run.conn.filters == {}
        assert run.node.subscriptions.count == 0


@FUZZ
@given(first=st.one_of(steady, outbound_acks, pubrels, garbage), rest=st.lists(anything))
def test_anything_before_connect_closes_without_an_answer(first: bytes, rest: list[bytes]) -> None:
    # [MQTT-3.1.0-1]: the first packet must be CONNECT; anything else closes, unanswered.
    if first[0] >> 4 == codec.CONNECT or len(first) < 2:
        return  # garbage that happens to start a CONNECT, or too short to be a packet yet
    run = _drive([first + b"".join(rest)])
    if run.transport.is_closed:
        assert run.transport.written == []
    else:  # an incomplete packet: nothing was processed yet
        assert run.conn.client_id is None and run.transport.written == []


@FUZZ
@given(
    connect=connect_packets(accepted=True),
    items=st.lists(steady, max_size=15),
    cuts=st.lists(st.integers(0, 2000), max_size=8),
)
def test_valid_streams_are_answered_in_order(
    connect: bytes, items: list[bytes], cuts: list[int]
) -> None:
    run = _drive(_cut(connect + b"".join(items), cuts))
    assert run.raised == [] and not run.transport.is_closed
    answers = [p for p in _packets(run.transport.written) if p.type != codec.PUBLISH]
    assert answers[0].type == codec.CONNACK and answers[0].body == b"\x00\x00"
    # One answer per packet, in the order of the packets [MQTT-4.6.0-2, -3].
    expected: list[tuple[int, int]] = []
    # A QoS 2 id resent before PUBREL is written once: it is answered with one more PUBREC
    # if the first one went out already [MQTT-4.3.3-2], so only the first PUBREC is compared.
    open_qos2: set[int] = set()
    for raw in items:
        (pkt,) = codec.Framer().feed(raw)
        if pkt.type == codec.PUBLISH:
            _t, qos, pid, *_ = codec.decode_publish(pkt.flags, pkt.body)
            if qos == 1:
                expected.append((codec.PUBACK, pid))
            elif qos == 2 and pid not in open_qos2:
                open_qos2.add(pid)
                expected.append((codec.PUBREC, pid))
        elif pkt.type == codec.SUBSCRIBE:
            expected.append((codec.SUBACK, int.from_bytes(pkt.body[:2], "big")))
        elif pkt.type == codec.UNSUBSCRIBE:
            expected.append((codec.UNSUBACK, int.from_bytes(pkt.body[:2], "big")))
        else:
            expected.append((codec.PINGRESP, 0))
    got: list[tuple[int, int]] = []
    for p in answers[1:]:
        answer = (p.type, int.from_bytes(p.body[:2], "big") if p.body else 0)
        if not (p.type == codec.PUBREC and answer in got):
            got.append(answer)
    # PUBACK/PUBREC wait for Kafka while SUBACK/PINGRESP do not: compare each kind's order.
    for kinds in ({codec.PUBACK, codec.PUBREC}, {codec.SUBACK}, {codec.UNSUBACK}, {codec.PINGRESP}):
        assert [a for a in got if a[0] in kinds] == [e for e in expected if e[0] in kinds]


# --- explicit examples: hostile inputs the decoders used to let through ----------------------


@pytest.mark.parametrize(
    "stream",
    [
        # Garbage right after a valid CONNECT, in the same read.
        _packet(codec.CONNECT, 0, b"\x00\x04MQTT\x04\x02\x00\x00\x00\x01a")
        + b"\xff\xff\xff\xff\xff",
        # A SUBSCRIBE filter that is not UTF-8 [MQTT-1.5.3-1].
        _packet(codec.CONNECT, 0, b"\x00\x04MQTT\x04\x02\x00\x00\x00\x01a")
        + _packet(codec.SUBSCRIBE, 2, b"\x00\x01\x00\x01\xff\x01"),
    ],
)
def test_regression_streams(stream: bytes) -> None:
    run = _drive([stream])
    assert run.raised == [] and run.transport.after_close == []
    assert run.transport.is_closed
