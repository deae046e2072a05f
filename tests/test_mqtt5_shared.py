"""Shared subscriptions ``$share/{group}/{filter}`` (issue 12, item 2; MQTT 5 §4.8.2).

Real clients over real sockets (paho in MQTT 5 and 3.1.1 mode, a raw MQTT 5 socket for a
member that never acknowledges), real `bayou ingress` nodes on the embedded Kafka: each node
with members joins the subscription's Kafka consumer group, so the tests wait for the group to
settle (``bayou_ingress_shared_partitions``) where balance between nodes is the point.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from bayou.embedded import EmbeddedKafka
from bayou.metrics_scrape import metric_value
from bayou.processes import stop_process
from ingress.wire import codec
from ingress.wire import reason_codes as rc
from ingress.wire.codec import PUBLISH
from ingress.wire.packets5 import decode_publish5
from ingress.wire.properties import Properties
from tests.conftest import Proc, start_ingress
from tests.helpers import Mqtt, wait_until
from tests.mqtt5_client import Mqtt5, Raw5

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# The demo routes' default topic (bayou.messages) has 4 partitions: keys (MQTT topics) spread
# over them, and Kafka gives partitions, not messages, to nodes.
N = 40


def _uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def clients() -> Iterator[list[Mqtt5 | Mqtt | Raw5]]:
    made: list[Mqtt5 | Mqtt | Raw5] = []
    yield made
    for c in made:
        c.close()


def _v5(port: int, made: list[Mqtt5 | Mqtt | Raw5], **kw: object) -> Mqtt5:
    c = Mqtt5(port, f"v5-{_uid()}", **kw)  # type: ignore[arg-type]
    made.append(c)
    c.connect()
    return c


def _drain(c: Mqtt5 | Mqtt, wait: float = 1.5) -> list[str]:
    """The payloads ``c`` received until nothing came for ``wait`` s."""
    got: list[str] = []
    while True:
        try:
            got.append(c.messages.get(timeout=wait).payload.decode())
        except Exception:
            return got


def _collect(members: list[Mqtt5 | Mqtt], n: int, timeout: float = 40) -> list[list[str]]:
    """Per member, the payloads received, once ``n`` arrived in all (then a quiet second)."""
    got: list[list[str]] = [[] for _ in members]

    def arrived() -> bool:
        for i, m in enumerate(members):
            while not m.messages.empty():
                got[i].append(m.messages.get().payload.decode())
        return sum(len(g) for g in got) >= n

    wait_until(arrived, timeout, f"{n} messages")
    for i, m in enumerate(members):
        got[i] += _drain(m, 1.0)
    return got


def _partitions(node: Proc) -> float:
    return metric_value(node.metrics_port, "bayou_ingress_shared_partitions") or 0.0


def _publish(pub: Mqtt5, base: str, n: int, qos: int = 1) -> list[str]:
    sent = []
    for i in range(n):
        pub.publish(f"{base}/{i}", f"m{i}".encode(), qos=qos).wait_for_publish(10)
        sent.append(f"m{i}")
    return sent


def test_mqtt_4_8_2_each_message_goes_to_one_member_in_turn(
    ingress: Proc, clients: list[Mqtt5 | Mqtt | Raw5]
) -> None:
    """Three members (two MQTT 5, one 3.1.1 on the same listener) share the messages: each
    exactly once in the group, every member some; a plain subscriber still gets them all."""
    base = f"share/{_uid()}"
    members: list[Mqtt5 | Mqtt] = []
    for _ in range(2):
        m = _v5(ingress.mqtt_port, clients)
        assert m.subscribe(f"$share/g/{base}/+") == [1]
        members.append(m)
    old = Mqtt(ingress.mqtt_port, f"v3-{_uid()}")
    clients.append(old)
    old.connect()
    assert old.subscribe(f"$share/g/{base}/+") == [1]
    members.append(old)
    plain = _v5(ingress.mqtt_port, clients)
    plain.subscribe(f"{base}/+")
    pub = _v5(ingress.mqtt_port, clients)
    sent = _publish(pub, base, N)
    got = _collect(members, N)
    everything = [p for g in got for p in g]
    assert sorted(everything) == sorted(sent), Counter(everything).most_common(3)
    assert all(len(g) >= N // 6 for g in got), [len(g) for g in got]
    assert sorted(_collect([plain], N)[0]) == sorted(sent)


def test_shared_deliveries_are_timed_end_to_end(
    ingress: Proc, clients: list[Mqtt5 | Mqtt | Raw5]
) -> None:
    """bayou_ingress_end_to_end_seconds counts a message written to a share's member as it
    counts one written to a plain subscriber (only a share subscribes here)."""
    name = "bayou_ingress_end_to_end_seconds_count"
    base = f"share/{_uid()}"
    members: list[Mqtt5 | Mqtt] = [_v5(ingress.mqtt_port, clients) for _ in range(2)]
    for m in members:
        assert m.subscribe(f"$share/timed/{base}/+") == [1]
    before = metric_value(ingress.metrics_port, name) or 0.0
    sent = _publish(_v5(ingress.mqtt_port, clients), base, 10)
    assert sorted(p for g in _collect(members, 10) for p in g) == sorted(sent)
    assert (metric_value(ingress.metrics_port, name) or 0.0) - before >= 10


def test_members_on_two_nodes_share_the_partitions(
    kafka: EmbeddedKafka, tmp_path: Path, clients: list[Mqtt5 | Mqtt | Raw5]
) -> None:
    """A member on each of two nodes: Kafka gives each node some partitions of the group, each
    message reaches one of them, and both get messages."""
    nodes = [start_ingress(kafka.bootstrap, tmp_path / f"n{i}.log") for i in range(2)]
    try:
        base = f"share/{_uid()}"
        members: list[Mqtt5 | Mqtt] = []
        totals: list[float] = []
        for node in nodes:
            m = _v5(node.mqtt_port, clients)
            assert m.subscribe(f"$share/two/{base}/+") == [1]
            members.append(m)
            if not totals:  # alone in the group: every partition is the first node's
                wait_until(lambda: _partitions(nodes[0]) > 0, 40, "the first node's partitions")
                totals.append(_partitions(nodes[0]))
        # Both nodes in the group, every partition served by one of them.
        wait_until(
            lambda: (
                all(_partitions(n) > 0 for n in nodes)
                and sum(_partitions(n) for n in nodes) == totals[0]
            ),
            40,
            "the group to settle",
        )
        pub = _v5(nodes[0].mqtt_port, clients)
        sent = _publish(pub, base, N)
        got = _collect(members, N)
        everything = [p for g in got for p in g]
        assert sorted(everything) == sorted(sent), Counter(everything).most_common(3)
        assert all(got), [len(g) for g in got]
        # The first node's member leaves: its node leaves the group, the other serves all.
        members[0].unsubscribe(f"$share/two/{base}/+")
        wait_until(lambda: _partitions(nodes[1]) == totals[0], 40, "the second node to serve all")
        sent = _publish(pub, f"{base}", 10)
        assert sorted(_collect([members[1]], 10)[0]) == sorted(sent)
    finally:
        for node in nodes:
            stop_process(node.proc)


def _raw_member(port: int, filt: str, receive_maximum: int) -> Raw5:
    raw = Raw5(port, f"raw-{_uid()}", Properties(receive_maximum=receive_maximum))
    ack = raw.subscribe(filt, 1)
    assert ack.body[-1] == 1, ack
    return raw


def _publishes(raw: Raw5, n: int) -> list[tuple[int, bytes]]:
    """The next ``n`` PUBLISH packets ``raw`` gets (not acknowledged): (packet id, payload)."""
    out: list[tuple[int, bytes]] = []
    while len(out) < n:
        pkt = raw.read(40)
        if pkt.type == PUBLISH:
            p = decode_publish5(pkt.flags, pkt.body)
            out.append((p.packet_id, p.payload))
    return out


def test_mqtt_4_8_2_a_lost_members_qos1_messages_go_to_another_member(
    ingress: Proc, clients: list[Mqtt5 | Mqtt | Raw5]
) -> None:
    """A member that never acknowledges holds its window's messages; when its connection
    ends they go to the other member: every message arrives, none is lost."""
    base = f"share/{_uid()}"
    raw = _raw_member(ingress.mqtt_port, f"$share/lost/{base}/+", receive_maximum=3)
    clients.append(raw)
    other = _v5(ingress.mqtt_port, clients)
    assert other.subscribe(f"$share/lost/{base}/+") == [1]
    before = metric_value(ingress.metrics_port, "bayou_ingress_shared_redelivered_total") or 0
    pub = _v5(ingress.mqtt_port, clients)
    sent = _publish(pub, base, 12)
    held = _publishes(raw, 3)  # its Receive Maximum: then the other member gets the rest
    raw.close()
    got = _collect([other], 12)[0]
    assert sorted(got) == sorted(sent), (held, got)
    after = metric_value(ingress.metrics_port, "bayou_ingress_shared_redelivered_total") or 0
    assert after - before == 3


def test_mqtt_4_8_2_5_a_lost_members_qos2_message_goes_to_nobody_else(
    ingress: Proc, clients: list[Mqtt5 | Mqtt | Raw5]
) -> None:
    """A QoS 2 message in flight to a member whose session ends is not sent to another."""
    base = f"share/{_uid()}"
    raw = Raw5(ingress.mqtt_port, f"raw-{_uid()}", Properties(receive_maximum=1))
    clients.append(raw)
    assert raw.subscribe(f"$share/q2/{base}/+", 2).body[-1] == 2
    pub = _v5(ingress.mqtt_port, clients)
    pub.publish(f"{base}/0", b"first", qos=2).wait_for_publish(10)
    assert _publishes(raw, 1)[0][1] == b"first"
    other = _v5(ingress.mqtt_port, clients)
    assert other.subscribe(f"$share/q2/{base}/+", 2) == [2]
    raw.close()  # no PUBREC: the client may have the message; its session ends with it
    time.sleep(0.5)  # the node sees the socket close before the next message arrives
    pub.publish(f"{base}/1", b"second", qos=2).wait_for_publish(10)
    assert [m.payload for m in [other.expect(40)]] == [b"second"]
    assert other.nothing(2.0)


def test_a_persistent_members_messages_wait_in_kafka_while_it_is_away(
    ingress: Proc, clients: list[Mqtt5 | Mqtt | Raw5]
) -> None:
    """The only member leaves (its session kept); what is published meanwhile waits at the
    group's committed offsets and arrives when it resumes (the session keeps ``$share/``)."""
    base = f"share/{_uid()}"
    cid = f"v5-{_uid()}"
    m = Mqtt5(ingress.mqtt_port, cid, clean_start=False, session_expiry=300)
    m.connect()
    assert m.subscribe(f"$share/away/{base}/+") == [1]
    pub = _v5(ingress.mqtt_port, clients)
    pub.publish(f"{base}/0", b"before").wait_for_publish(10)
    assert m.expect(40).payload == b"before"
    m.close()
    wait_until(lambda: _partitions(ingress) == 0, 20, "the group to close on this node")
    sent = [f"m{i}" for i in range(5)]
    for i, p in enumerate(sent):
        pub.publish(f"{base}/{i}", p.encode()).wait_for_publish(10)
    back = Mqtt5(ingress.mqtt_port, cid, clean_start=False, session_expiry=300)
    clients.append(back)
    assert back.connect()[1] is True  # session present: $share/away/... resumed
    assert sorted(_collect([back], 5)[0]) == sent


def test_malformed_shared_subscriptions(ingress: Proc, clients: list[Mqtt5 | Mqtt | Raw5]) -> None:
    """[MQTT-4.8.2-1, -2]: a share name of one character at least, followed by a filter;
    [MQTT-3.8.3-4]: No Local on a shared subscription is a Protocol Error."""
    raw = Raw5(ingress.mqtt_port, f"raw-{_uid()}")
    clients.append(raw)
    for bad in ("$share//a", "$share/g", "$share/g/", "$share/g+/a", "$share/g/a+"):
        assert raw.subscribe(bad, 1).body[-1] == rc.TOPIC_FILTER_INVALID, bad
    f = b"$share/g/nl"
    body = b"\x00\x01\x00" + len(f).to_bytes(2, "big") + f + bytes((0x04 | 1,))
    raw.send(bytes((0x82,)) + codec.encode_remaining_length(len(body)) + body)
    assert raw.disconnect_reason() == rc.PROTOCOL_ERROR


def test_a_dead_nodes_unacknowledged_messages_go_to_a_member_on_another_node(
    kafka: EmbeddedKafka, tmp_path: Path, clients: list[Mqtt5 | Mqtt | Raw5]
) -> None:
    """Node A's member never acknowledges; node A is killed (SIGKILL). Once its group session
    times out, node B serves A's partitions from the committed offsets: B's member gets every
    message, those A held included."""
    timeout = {"BAYOU_SHARE_SESSION_TIMEOUT_MS": "3000"}
    a = start_ingress(kafka.bootstrap, tmp_path / "a.log", **timeout)
    b = start_ingress(kafka.bootstrap, tmp_path / "b.log", **timeout)
    try:
        base = f"share/{_uid()}"
        filt = f"$share/dead/{base}/+"
        raw = _raw_member(a.mqtt_port, filt, receive_maximum=3)
        clients.append(raw)
        wait_until(lambda: _partitions(a) > 0, 40, "node A's partitions")
        total = _partitions(a)
        member = _v5(b.mqtt_port, clients)
        assert member.subscribe(filt) == [1]
        wait_until(
            lambda: _partitions(b) > 0 and _partitions(a) + _partitions(b) == total,
            40,
            "the group to settle",
        )
        pub = _v5(b.mqtt_port, clients)
        sent = _publish(pub, base, N)
        _publishes(raw, 1)  # A's partitions are busy: its member holds messages
        a.proc.kill()
        a.proc.wait(10)
        got = _collect([member], N, timeout=60)[0]
        assert sorted(set(got)) == sorted(sent)
    finally:
        for node in (a, b):
            stop_process(node.proc)
