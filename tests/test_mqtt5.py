"""MQTT 5 on Bayou's listener, beside MQTT 3.1.1 (issue 12, item 1 and the Kafka mapping).

Real clients over real sockets: paho-mqtt in MQTT 5 mode (tests/mqtt5_client.Mqtt5), a raw
socket for what a client library never sends (tests/mqtt5_client.Raw5), mosquitto 2's
clients with ``-V mqttv5``; the session's `bayou ingress` on the embedded Kafka, and nodes of
their own where a setting differs. Tests are named after the OASIS MQTT 5.0 statement they
check where there is one.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.reasoncodes import ReasonCode

from bayou.embedded import EmbeddedKafka
from bayou.processes import stop_process
from ingress.wire import codec
from ingress.wire import reason_codes as rc
from ingress.wire.codec import PUBLISH, encode_remaining_length
from ingress.wire.packets5 import decode_publish5, encode_publish5
from ingress.wire.properties import Properties, decode_properties, encode_properties
from tests.conftest import Proc, start_ingress
from tests.helpers import Mqtt, headers, read_topic
from tests.mqtt5_client import Mqtt5, Raw5, props

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def _uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def clients() -> Iterator[list[Mqtt5 | Mqtt]]:
    made: list[Mqtt5 | Mqtt] = []
    yield made
    for c in made:
        c.close()


def _v5(port: int, made: list[Mqtt5 | Mqtt], client_id: str = "", **kw: object) -> Mqtt5:
    c = Mqtt5(port, client_id or f"v5-{_uid()}", **kw)  # type: ignore[arg-type]
    made.append(c)
    return c


def _connack_props(pkt: codec.Packet) -> Properties:
    return decode_properties(pkt.body, 2, codec.CONNACK)[0]


def test_connack_says_what_the_node_allows(ingress: Proc, clients: list[Mqtt5 | Mqtt]) -> None:
    code, present, p = _v5(ingress.mqtt_port, clients).connect()
    assert (code, present) == (rc.SUCCESS, False)
    assert p.MaximumPacketSize == 1024 * 1024  # BAYOU_MAX_PACKET_SIZE
    assert p.TopicAliasMaximum == 64
    # Shared subscriptions are available: the property is left out (tests/test_mqtt5_shared.py).
    assert not hasattr(p, "SharedSubscriptionAvailable")
    assert not hasattr(p, "AssignedClientIdentifier")


def test_mqtt_3_1_3_7_empty_client_id_gets_an_assigned_identifier(
    ingress: Proc, clients: list[Mqtt5 | Mqtt]
) -> None:
    raw = Raw5(ingress.mqtt_port, "")
    try:
        assert raw.connack.body[1] == rc.SUCCESS
        assigned = _connack_props(raw.connack).assigned_client_identifier
        assert assigned and assigned.startswith("bayou-")
    finally:
        raw.close()


def test_properties_travel_through_kafka_both_ways(
    ingress: Proc, kafka: EmbeddedKafka, clients: list[Mqtt5 | Mqtt]
) -> None:
    topic = f"v5/{_uid()}/req"
    sub = _v5(ingress.mqtt_port, clients)
    sub.connect()
    assert sub.subscribe(topic) == [1]
    old = Mqtt(ingress.mqtt_port, f"v311-{_uid()}")
    clients.append(old)
    old.connect()
    old.subscribe(topic)
    pub = _v5(ingress.mqtt_port, clients)
    pub.connect()
    info = pub.publish(
        topic, b'{"x": 1}', qos=1,
        UserProperty=[("trace", "abc"), ("trace", "def"), ("site", "n\u00e8")],
        ContentType="application/json", CorrelationData=b"\x00\x01corr",
        ResponseTopic=f"{topic}/reply", PayloadFormatIndicator=1,
    )  # fmt: skip
    info.wait_for_publish(10)
    got = sub.expect()
    assert got.payload == b'{"x": 1}'
    # [MQTT-3.3.2-17] user properties unaltered, in order, repeats kept
    assert got.user_properties == [("trace", "abc"), ("trace", "def"), ("site", "n\u00e8")]
    assert got.content_type == "application/json"  # [MQTT-3.3.2-20]
    assert got.correlation_data == b"\x00\x01corr"
    assert got.response_topic == f"{topic}/reply"  # [MQTT-3.3.2-15]
    assert got.payload_format == 1  # [MQTT-3.3.2-4]
    # A 3.1.1 subscriber on the same topic gets the message (without properties).
    assert old.expect(lambda m: m.topic == topic).payload == b'{"x": 1}'
    # In Kafka: the contract's headers, then the properties as headers.
    recs = [r for r in read_topic(kafka.bootstrap, "bayou.messages")
            if headers(r).get("mqtt.topic") == topic.encode()]  # fmt: skip
    assert len(recs) == 1
    h = recs[0].headers
    assert ("trace", b"abc") in h and ("trace", b"def") in h and ("site", "n\u00e8".encode()) in h
    assert headers(recs[0])["mqtt.content_type"] == b"application/json"
    assert headers(recs[0])["mqtt.correlation_data"] == b"\x00\x01corr"
    assert headers(recs[0])["mqtt.response_topic"] == f"{topic}/reply".encode()
    assert headers(recs[0])["mqtt.payload_format"] == b"1"


def test_a_311_publish_reaches_an_mqtt5_subscriber(
    ingress: Proc, clients: list[Mqtt5 | Mqtt]
) -> None:
    topic = f"v5/{_uid()}/from311"
    sub = _v5(ingress.mqtt_port, clients)
    sub.connect()
    sub.subscribe(topic, qos=2)
    old = Mqtt(ingress.mqtt_port, f"v311-{_uid()}")
    clients.append(old)
    old.connect()
    old.publish(topic, b"hello", qos=2).wait_for_publish(10)
    got = sub.expect()
    assert (got.payload, got.qos, got.user_properties) == (b"hello", 2, [])


def test_reserved_user_property_names_are_refused(
    ingress: Proc, kafka: EmbeddedKafka, clients: list[Mqtt5 | Mqtt]
) -> None:
    """A client may not set what only Bayou writes (a result id forges an agent's output)."""
    topic = f"v5/{_uid()}/forged"
    raw = Raw5(ingress.mqtt_port, f"raw-{_uid()}")
    try:
        block = encode_properties(Properties(user_properties=[("bayou.result_id", "x")]), PUBLISH)
        raw.send(encode_publish5(topic, b"forged", 1, 7, False, block))
        ack = raw.read()
        assert ack.type == codec.PUBACK
        assert ack.body[:3] == b"\x00\x07" + bytes((rc.IMPLEMENTATION_SPECIFIC_ERROR,))
    finally:
        raw.close()
    recs = [r for r in read_topic(kafka.bootstrap, "bayou.messages", timeout=2)
            if headers(r).get("mqtt.topic") == topic.encode()]  # fmt: skip
    assert recs == []


def test_subscription_options_and_identifiers(ingress: Proc, clients: list[Mqtt5 | Mqtt]) -> None:
    base = f"v5/{_uid()}"
    me = _v5(ingress.mqtt_port, clients)
    me.connect()
    # No Local: my own publishes do not come back on this subscription [MQTT-3.8.3-3].
    assert me.subscribe(f"{base}/local", no_local=True) == [1]
    # Subscription identifiers on delivery [MQTT-3.3.4-3].
    assert me.subscribe(f"{base}/ids/#", sub_id=7) == [1]
    assert me.subscribe(f"{base}/ids/+/x", sub_id=9) == [1]
    other = _v5(ingress.mqtt_port, clients)
    other.connect()
    me.publish(f"{base}/local", b"mine").wait_for_publish(10)
    other.publish(f"{base}/local", b"theirs").wait_for_publish(10)
    got = me.expect()
    assert got.payload == b"theirs"
    other.publish(f"{base}/ids/a/x", b"both").wait_for_publish(10)
    assert sorted(me.expect().subscription_ids) == [7, 9]
    # My own publish delivered by a plain subscription carries its identifier, not that of
    # the No Local one that matches too (it delivered nothing).
    assert me.subscribe(f"{base}/both/#", no_local=True, sub_id=11) == [1]
    assert me.subscribe(f"{base}/both/+", sub_id=12) == [1]
    me.publish(f"{base}/both/t", b"own").wait_for_publish(10)
    own = me.expect()
    assert (own.payload, own.subscription_ids) == (b"own", [12])
    # Retain As Published keeps RETAIN on live delivery [MQTT-3.3.1-12]; without it, 0.
    assert me.subscribe(f"{base}/rap", retain_as_published=True) == [1]
    assert other.subscribe(f"{base}/rap") == [1]
    pub = _v5(ingress.mqtt_port, clients)
    pub.connect()
    pub.publish(f"{base}/rap", b"kept", retain=True).wait_for_publish(10)
    assert me.expect().retain is True
    assert other.expect().retain is False
    # Retain Handling 2: no retained message at subscribe [MQTT-3.3.1-11]; 0: sent.
    late = _v5(ingress.mqtt_port, clients)
    late.connect()
    assert late.subscribe(f"{base}/rap", retain_handling=2) == [1]
    assert late.nothing(1.0)
    assert late.subscribe(f"{base}/rap/#", retain_handling=0) == [1]
    assert late.expect().payload == b"kept"
    # UNSUBACK says whether there was a subscription.
    assert late.unsubscribe(f"{base}/nothing-here") == [rc.NO_SUBSCRIPTION_EXISTED]
    assert late.unsubscribe(f"{base}/rap") == [rc.SUCCESS]
    pub.publish(f"{base}/rap", b"", retain=True).wait_for_publish(10)  # clear it


def _alias(n: int) -> bytes:
    return encode_properties(Properties(topic_alias=n), PUBLISH)


def test_mqtt_3_3_2_12_topic_alias_set_then_used(ingress: Proc) -> None:
    topic = f"v5/{_uid()}/alias"
    sub = Mqtt5(ingress.mqtt_port, f"s-{_uid()}")
    raw = Raw5(ingress.mqtt_port, f"raw-{_uid()}")
    try:
        sub.connect()
        sub.subscribe(topic)
        raw.send(encode_publish5(topic, b"one", 1, 1, False, _alias(3)))
        raw.send(encode_publish5("", b"two", 1, 2, False, _alias(3)))
        assert [raw.read().type, raw.read().type] == [codec.PUBACK, codec.PUBACK]
        assert [sub.expect().payload, sub.expect().payload] == [b"one", b"two"]
        # Above the maximum announced in CONNACK: DISCONNECT 0x94 [MQTT-3.3.2-9].
        raw.send(encode_publish5("", b"three", 1, 3, False, _alias(65)))
        assert raw.disconnect_reason() == rc.TOPIC_ALIAS_INVALID
        with pytest.raises(ConnectionError):
            raw.read(5)
        # A Topic Alias of 0 is not permitted [MQTT-3.3.2-8]: 0x94 too.
        zero = Raw5(ingress.mqtt_port, f"raw-{_uid()}")
        try:
            zero.send(encode_publish5(topic, b"four", 1, 4, False, b"\x03\x23\x00\x00"))
            assert zero.disconnect_reason() == rc.TOPIC_ALIAS_INVALID
        finally:
            zero.close()
    finally:
        sub.close()
        raw.close()


def test_mqtt_3_3_2_12_node_sets_topic_aliases_within_the_clients_maximum(
    ingress: Proc, clients: list[Mqtt5 | Mqtt]
) -> None:
    """Node → client aliases: the first topics sent get one (topic and alias), later messages
    on them carry the alias and an empty topic; beyond the client's Topic Alias Maximum the
    topic goes in full [MQTT-3.3.2-9, -10]. A raw socket reads them: libmosquitto 2.0's
    client refuses an alias it was sent (eclipse-mosquitto/mosquitto#1468), paho ignores them."""
    base = f"v5/{_uid()}/out-alias"
    raw = Raw5(ingress.mqtt_port, f"raw-{_uid()}", Properties(topic_alias_maximum=2))
    try:
        assert raw.subscribe(f"{base}/+", 0).body[-1] == 0
        pub = _v5(ingress.mqtt_port, clients)
        pub.connect()
        got: list[tuple[str, int | None, bytes]] = []
        # One at a time: topics are keyed to different Kafka partitions, whose records may
        # reach the node in any order, and the order decides which topic gets which alias.
        for t, p in [("a", b"1"), ("a", b"2"), ("b", b"3"), ("c", b"4"), ("b", b"5")]:
            pub.publish(f"{base}/{t}", p).wait_for_publish(10)
            want = len(got) + 1
            while len(got) < want:
                pkt = raw.read(20)
                if pkt.type == PUBLISH:
                    m = decode_publish5(pkt.flags, pkt.body)
                    alias = m.properties.topic_alias if m.properties else None
                    got.append((m.topic, alias, m.payload))
        assert got == [
            (f"{base}/a", 1, b"1"),
            ("", 1, b"2"),
            (f"{base}/b", 2, b"3"),
            (f"{base}/c", None, b"4"),
            ("", 2, b"5"),
        ]
    finally:
        raw.close()


def test_malformed_packet_closes_that_client_with_0x81(
    ingress: Proc, clients: list[Mqtt5 | Mqtt]
) -> None:
    topic = f"v5/{_uid()}/survivor"
    ok = _v5(ingress.mqtt_port, clients)
    ok.connect()
    ok.subscribe(topic)
    raw = Raw5(ingress.mqtt_port, f"raw-{_uid()}")
    try:
        # A property length that runs past the packet.
        body = b"\x00\x01t\x00\x01" + b"\x09\x01"
        raw.send(bytes((0x32,)) + encode_remaining_length(len(body)) + body)
        assert raw.disconnect_reason() == rc.MALFORMED_PACKET
    finally:
        raw.close()
    ok.publish(topic, b"still here").wait_for_publish(10)
    assert ok.expect().payload == b"still here"


def test_enhanced_authentication_is_answered_not_supported(ingress: Proc) -> None:
    raw = Raw5(ingress.mqtt_port, f"raw-{_uid()}", Properties(authentication_method="SCRAM"))
    try:
        assert raw.connack.body[1] == rc.BAD_AUTHENTICATION_METHOD
        with pytest.raises(ConnectionError):
            raw.read(5)
    finally:
        raw.close()


def test_mqtt_3_1_4_3_takeover_sends_disconnect_0x8e(
    ingress: Proc, clients: list[Mqtt5 | Mqtt]
) -> None:
    cid = f"take-{_uid()}"
    first = Raw5(ingress.mqtt_port, cid)
    try:
        second = _v5(ingress.mqtt_port, clients, cid)
        assert second.connect()[0] == rc.SUCCESS
        assert first.disconnect_reason() == rc.SESSION_TAKEN_OVER
    finally:
        first.close()


def test_message_expiry_is_checked_at_delivery_and_forwarded(
    ingress: Proc, clients: list[Mqtt5 | Mqtt]
) -> None:
    topic = f"v5/{_uid()}/expiry"
    cid = f"offline-{_uid()}"
    away = _v5(ingress.mqtt_port, clients, cid, clean_start=True, session_expiry=300)
    away.connect()
    away.subscribe(topic)
    live = _v5(ingress.mqtt_port, clients)
    live.connect()
    live.subscribe(topic)
    away.close()
    clients.remove(away)
    pub = _v5(ingress.mqtt_port, clients)
    pub.connect()
    pub.publish(topic, b"short", MessageExpiryInterval=1).wait_for_publish(10)
    pub.publish(topic, b"long", MessageExpiryInterval=120).wait_for_publish(10)
    # Live: the remaining interval is forwarded [MQTT-3.3.2-6].
    got = {m.payload: m.message_expiry for m in (live.expect(), live.expect())}
    assert got[b"short"] is not None and got[b"short"] <= 1
    assert got[b"long"] is not None and 100 <= got[b"long"] <= 120
    time.sleep(2.2)
    # Catch-up after the short one expired: only the long one [MQTT-3.3.2-5].
    back = _v5(ingress.mqtt_port, clients, cid, clean_start=False, session_expiry=300)
    code, present, _ = back.connect()
    assert (code, present) == (rc.SUCCESS, True)
    assert back.expect().payload == b"long"
    assert back.nothing(1.5)


def test_session_expiry_interval(ingress: Proc, clients: list[Mqtt5 | Mqtt]) -> None:
    keep, short, gone = (f"{n}-{_uid()}" for n in ("keep", "short", "gone"))
    for cid, expiry in ((keep, 300), (short, 1), (gone, 0)):
        c = Mqtt5(ingress.mqtt_port, cid, session_expiry=expiry)
        c.connect()
        c.subscribe(f"v5/{cid}")
        c.close()
    time.sleep(2.5)
    results = {}
    for cid in (keep, short, gone):
        c = _v5(ingress.mqtt_port, clients, cid, clean_start=False, session_expiry=300)
        results[cid] = c.connect()[1]
    # [MQTT-3.1.2-23]: kept while the interval runs; expired after it; 0 ends with the
    # connection.
    assert results == {keep: True, short: False, gone: False}


def test_disconnect_with_will_sends_the_will(ingress: Proc, clients: list[Mqtt5 | Mqtt]) -> None:
    will_topic = f"v5/{_uid()}/will"
    watcher = _v5(ingress.mqtt_port, clients)
    watcher.connect()
    watcher.subscribe(will_topic)
    c = Mqtt5(ingress.mqtt_port, f"w-{_uid()}")
    c.client.will_set(will_topic, b"bye", qos=1)
    c.connect()
    c.client.disconnect(reasoncode=_reason(rc.DISCONNECT_WITH_WILL))
    c.client.loop_stop()
    c.client._reset_sockets(sockpair_only=True)
    assert watcher.expect().payload == b"bye"  # [MQTT-3.14.4-3] unless 0x04: here 0x04


def _reason(code: int) -> ReasonCode:
    return ReasonCode(PacketTypes.DISCONNECT, identifier=code)


@pytest.fixture
def small_node(kafka: EmbeddedKafka, tmp_path: Path) -> Iterator[Proc]:
    """A node with Receive Maximum 2 and a 300-byte maximum packet size."""
    p = start_ingress(
        kafka.bootstrap, tmp_path / "small.log", BAYOU_RECEIVE_MAXIMUM="2",
        BAYOU_MAX_PACKET_SIZE="300",
    )  # fmt: skip
    yield p
    stop_process(p.proc)


def test_mqtt_3_3_4_8_receive_maximum_exceeded_disconnects_0x93(small_node: Proc) -> None:
    raw = Raw5(small_node.mqtt_port, f"raw-{_uid()}")
    try:
        assert _connack_props(raw.connack).receive_maximum == 2
        topic = f"v5/{_uid()}/flood"
        # Three QoS 1 publishes in one write: the third arrives before any PUBACK.
        raw.send(b"".join(encode_publish5(topic, b"x", 1, pid, False) for pid in (1, 2, 3)))
        assert raw.disconnect_reason() == rc.RECEIVE_MAXIMUM_EXCEEDED
    finally:
        raw.close()


def test_maximum_packet_size_both_ways(small_node: Proc, clients: list[Mqtt5 | Mqtt]) -> None:
    topic = f"v5/{_uid()}/size"
    # The client's maximum: a larger message is not sent to it [MQTT-3.1.2-25].
    tiny = _v5(small_node.mqtt_port, clients, connect_properties={"MaximumPacketSize": 64})
    tiny.connect()
    tiny.subscribe(topic)
    pub = _v5(small_node.mqtt_port, clients)
    pub.connect()
    pub.publish(topic, b"x" * 100).wait_for_publish(10)
    pub.publish(topic, b"small").wait_for_publish(10)
    assert tiny.expect().payload == b"small"

    # The node's maximum (300 bytes, the whole packet [MQTT-3.2.2-15]): exactly 300 is taken,
    # 301 is answered DISCONNECT 0x95.
    def publish_of(size: int, pid: int) -> bytes:
        # 200 bytes of payload and more keep the remaining length at two bytes.
        base = len(encode_publish5(topic, b"y" * 200, 1, pid, False))
        return encode_publish5(topic, b"y" * (200 + size - base), 1, pid, False)

    assert len(publish_of(300, 1)) == 300 and len(publish_of(301, 2)) == 301
    raw = Raw5(small_node.mqtt_port, f"raw-{_uid()}")
    try:
        raw.send(publish_of(300, 1))
        assert raw.read().type == codec.PUBACK
        raw.send(publish_of(301, 2))
        assert raw.disconnect_reason() == rc.PACKET_TOO_LARGE
    finally:
        raw.close()


def test_mosquitto_clients_speak_mqtt5(ingress: Proc, clients: list[Mqtt5 | Mqtt]) -> None:
    """mosquitto_pub and mosquitto_sub 2.x with ``-V mqttv5``, user property included."""
    topic = f"v5/{_uid()}/mosq"
    sub = subprocess.Popen(
        ["mosquitto_sub", "-V", "mqttv5", "-p", str(ingress.mqtt_port), "-h", "127.0.0.1",
         "-t", topic, "-C", "1", "-F", "%p|%P", "-W", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        v5 = _v5(ingress.mqtt_port, clients)
        v5.connect()
        v5.subscribe(topic)
        time.sleep(1.0)  # mosquitto_sub has subscribed
        out = subprocess.run(
            ["mosquitto_pub", "-V", "mqttv5", "-p", str(ingress.mqtt_port), "-h", "127.0.0.1",
             "-t", topic, "-m", "from mosquitto", "-q", "1", "-D", "publish", "user-property",
             "origin", "mosq"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        got = v5.expect()
        assert (got.payload, got.user_properties) == (b"from mosquitto", [("origin", "mosq")])
        stdout, stderr = sub.communicate(timeout=25)
        assert sub.returncode == 0, stderr
        assert stdout.decode().strip() == "from mosquitto|origin:mosq"
    finally:
        stop_process(sub)


def test_retained_messages_keep_their_properties_and_expire(
    ingress: Proc, clients: list[Mqtt5 | Mqtt]
) -> None:
    topic = f"v5/{_uid()}/retained"
    pub = _v5(ingress.mqtt_port, clients)
    pub.connect()
    pub.publish(topic, b"kept", retain=True, UserProperty=[("k", "v")],
                ContentType="text/plain").wait_for_publish(10)  # fmt: skip
    pub.publish(f"{topic}/short", b"soon gone", retain=True,
                MessageExpiryInterval=1).wait_for_publish(10)  # fmt: skip
    time.sleep(2.2)
    sub = _v5(ingress.mqtt_port, clients)
    sub.connect()
    assert sub.subscribe(f"{topic}/#", sub_id=5) == [1]
    got = sub.expect()
    # [MQTT-3.3.2-17]/[-20]: properties kept with the retained message; its subscription's id.
    assert (got.payload, got.retain, got.user_properties, got.content_type) == (
        b"kept", True, [("k", "v")], "text/plain",
    )  # fmt: skip
    assert got.subscription_ids == [5]
    assert sub.nothing(1.0)  # the expired one is not sent [MQTT-3.3.2-5]
    for t in (topic, f"{topic}/short"):
        pub.publish(t, b"", retain=True).wait_for_publish(10)


def test_mqtt_3_1_3_9_will_delay_interval(ingress: Proc, clients: list[Mqtt5 | Mqtt]) -> None:
    """The will goes out once the delay has passed; a reconnect within it cancels it."""
    base = f"v5/{_uid()}/delayed"
    watcher = _v5(ingress.mqtt_port, clients)
    watcher.connect()
    watcher.subscribe(f"{base}/#")
    session = Properties(session_expiry_interval=60)
    late = Raw5(ingress.mqtt_port, f"late-{_uid()}", session,
                (f"{base}/late", b"late will", Properties(will_delay_interval=2)))  # fmt: skip
    back_id = f"back-{_uid()}"
    back = Raw5(ingress.mqtt_port, back_id, session,
                (f"{base}/back", b"never", Properties(will_delay_interval=3)))  # fmt: skip
    late.close()  # no DISCONNECT: the wills are due
    back.close()
    t0 = time.monotonic()
    again = Raw5(ingress.mqtt_port, back_id, session, clean_start=False)
    try:
        assert again.connack.body[0] == 1  # session present
        assert watcher.nothing(1.0)  # not before its delay
        got = watcher.expect(timeout=10)
        assert (got.topic, got.payload) == (f"{base}/late", b"late will")
        assert time.monotonic() - t0 >= 1.9
        assert watcher.nothing(2.5)  # the reconnected client's will never comes
    finally:
        again.close()


def test_expired_sessions_are_deleted_from_kafka(ingress: Proc, kafka: EmbeddedKafka) -> None:
    """An expired session's record is tombstoned in bayou.sessions (every 5 s a node looks),
    so the compacted topic and every node's index forget it; a live one is kept."""
    gone, kept = f"exp-{_uid()}", f"kept-{_uid()}"
    for cid, expiry in ((gone, 1), (kept, 300)):
        c = Mqtt5(ingress.mqtt_port, cid, session_expiry=expiry)
        c.connect()
        c.subscribe(f"v5/{cid}")
        c.close()

    def last_value(cid: str) -> bytes | str | None:
        recs = [r for r in read_topic(kafka.bootstrap, "bayou.sessions", timeout=3)
                if r.key == cid.encode()]  # fmt: skip
        return recs[-1].value if recs else "none"

    deadline = time.monotonic() + 20
    while last_value(gone) is not None:
        assert time.monotonic() < deadline, "expired session not deleted"
        time.sleep(1.0)
    kept_value = last_value(kept)
    assert isinstance(kept_value, bytes) and b'"exp":300' in kept_value


def test_replay_subscription_sends_history_then_live_once(
    ingress: Proc, clients: list[Mqtt5 | Mqtt]
) -> None:
    """SUBSCRIBE with user property ``replay-since``: the filter's history since then, read
    from Kafka, then live, with no gap and no duplicate; the client's other subscription is
    not sent its messages again."""
    base = f"v5/{_uid()}"
    pub = _v5(ingress.mqtt_port, clients)
    pub.connect()
    me = _v5(ingress.mqtt_port, clients)
    me.connect()
    assert me.subscribe(f"{base}/other") == [1]
    pub.publish(f"{base}/h", b"old").wait_for_publish(10)
    time.sleep(0.3)
    since = int(time.time() * 1000)
    time.sleep(0.05)
    for i in range(3):
        pub.publish(f"{base}/h", f"h{i}".encode()).wait_for_publish(10)
    pub.publish(f"{base}/other", b"o1").wait_for_publish(10)
    assert me.expect().payload == b"o1"  # live, before the replay
    me.client.subscribe(
        f"{base}/h", qos=1,
        properties=_sub_props(UserProperty=[("replay-since", str(since))]),
    )  # fmt: skip
    assert me._subacks.get(timeout=10) == [1]
    pub.publish(f"{base}/h", b"live").wait_for_publish(10)
    got = [me.expect().payload for _ in range(4)]
    assert got == [b"h0", b"h1", b"h2", b"live"]  # history in order, then live
    assert me.nothing(1.5)  # not o1 again, nothing twice


def test_replay_since_must_be_a_time(ingress: Proc, clients: list[Mqtt5 | Mqtt]) -> None:
    me = _v5(ingress.mqtt_port, clients)
    me.connect()
    for bad in ("yesterday", str(int(time.time() * 1000) + 600_000), "2026-01-01T00:00:00"):
        me.client.subscribe(
            f"v5/{_uid()}", qos=1, properties=_sub_props(UserProperty=[("replay-since", bad)])
        )
        assert me._subacks.get(timeout=10) == [rc.IMPLEMENTATION_SPECIFIC_ERROR], bad


def _sub_props(**values: object) -> PahoProperties:
    return props(PacketTypes.SUBSCRIBE, **values)


def test_mqtt_3_3_2_14_response_topic_with_a_wildcard_is_a_protocol_error(ingress: Proc) -> None:
    raw = Raw5(ingress.mqtt_port, f"raw-{_uid()}")
    try:
        block = encode_properties(Properties(response_topic="replies/#"), PUBLISH)
        raw.send(encode_publish5(f"v5/{_uid()}", b"x", 1, 1, False, block))
        assert raw.disconnect_reason() == rc.PROTOCOL_ERROR
    finally:
        raw.close()


@pytest.fixture
def node_b(kafka: EmbeddedKafka, tmp_path: Path) -> Iterator[Proc]:
    """A second ingress node on the same Kafka."""
    p = start_ingress(kafka.bootstrap, tmp_path / "b.log")
    yield p
    stop_process(p.proc)


def test_an_mqtt5_session_resumes_on_another_node_with_its_options(
    ingress: Proc, node_b: Proc, clients: list[Mqtt5 | Mqtt]
) -> None:
    """Subscription identifiers and No Local live in the session record in Kafka: a session
    resumed on another node keeps them; the takeover across nodes is a DISCONNECT 0x8E."""
    base = f"v5/{_uid()}"
    cid = f"roam-{_uid()}"
    first = Raw5(ingress.mqtt_port, cid, Properties(session_expiry_interval=300))
    try:
        # QoS 1, No Local, identifier 11
        first.subscribe(f"{base}/#", 0x05, Properties(subscription_identifiers=[11]))
        time.sleep(1.5)  # the session record (with the options) is checkpointed
        again = _v5(node_b.mqtt_port, clients, cid, clean_start=False, session_expiry=300)
        code, present, _ = again.connect()
        assert (code, present) == (rc.SUCCESS, True)
        assert first.disconnect_reason() == rc.SESSION_TAKEN_OVER  # [MQTT-3.1.4-3]
    finally:
        first.close()
    pub = _v5(ingress.mqtt_port, clients)
    pub.connect()
    pub.publish(f"{base}/x", b"to the roamer").wait_for_publish(10)
    got = again.expect()
    assert (got.payload, got.subscription_ids) == (b"to the roamer", [11])
    again.publish(f"{base}/mine", b"no local").wait_for_publish(10)
    assert again.nothing(1.5)  # No Local kept across nodes


def test_a_will_with_a_reserved_user_property_is_refused_in_connack(ingress: Proc) -> None:
    will = (f"v5/{_uid()}/w", b"x", Properties(user_properties=[("bayou.result_id", "f")]))
    raw = Raw5(ingress.mqtt_port, f"raw-{_uid()}", will=will)
    try:
        assert raw.connack.body[1] == rc.PROTOCOL_ERROR
        with pytest.raises(ConnectionError):
            raw.read(5)
    finally:
        raw.close()


def test_mqtt_3_3_4_9_retained_messages_wait_for_the_clients_receive_maximum(
    ingress: Proc, clients: list[Mqtt5 | Mqtt]
) -> None:
    base = f"v5/{_uid()}/many"
    pub = _v5(ingress.mqtt_port, clients)
    pub.connect()
    for i in range(5):
        pub.publish(f"{base}/{i}", f"r{i}".encode(), retain=True).wait_for_publish(10)
    raw = Raw5(ingress.mqtt_port, f"raw-{_uid()}", Properties(receive_maximum=2))
    try:
        raw.subscribe(f"{base}/#", 0x01)
        first = [raw.read(), raw.read()]
        assert all(p.type == codec.PUBLISH for p in first)
        with pytest.raises(TimeoutError):
            raw.read(1.0)  # no third while two wait for PUBACK
        got = []
        pending = first
        while pending:
            pkt = pending.pop(0)
            pub5 = decode_publish5(pkt.flags, pkt.body)
            got.append(pub5.payload)
            raw.send(b"\x40\x02" + pub5.packet_id.to_bytes(2, "big"))
            if len(got) + len(pending) < 5:
                pending.append(raw.read())
        assert sorted(got) == [f"r{i}".encode() for i in range(5)]
    finally:
        raw.close()
        for i in range(5):
            pub.publish(f"{base}/{i}", b"", retain=True).wait_for_publish(10)


def test_mqtt_4_9_0_2_resends_of_a_resumed_session_keep_to_the_new_receive_maximum(
    ingress: Proc, clients: list[Mqtt5 | Mqtt]
) -> None:
    """Five QoS 1 messages left unacknowledged; the session resumes with Receive Maximum 2:
    two go out again (DUP, same packet ids), the next only as PUBACKs come, all in order."""
    topic = f"v5/{_uid()}/resume"
    cid = f"resume-{_uid()}"
    first = Raw5(ingress.mqtt_port, cid, Properties(session_expiry_interval=300))
    pub = _v5(ingress.mqtt_port, clients)
    try:
        first.subscribe(topic, 0x01)
        pub.connect()
        for i in range(5):
            pub.publish(topic, f"m{i}".encode(), qos=1).wait_for_publish(10)
        sent = []
        for _ in range(5):
            pkt = first.read()
            sent.append(decode_publish5(pkt.flags, pkt.body))
        assert [m.payload for m in sent] == [f"m{i}".encode() for i in range(5)]
    finally:
        first.close()  # no PUBACK for any of them
    window_of_two = Properties(session_expiry_interval=300, receive_maximum=2)
    back = Raw5(ingress.mqtt_port, cid, window_of_two, clean_start=False)
    try:
        assert back.connack.body[0] == 1  # session present
        got = []
        window = [back.read(), back.read()]
        with pytest.raises(TimeoutError):
            back.read(1.0)  # no third while two wait for PUBACK
        while window:
            m = decode_publish5(window[0].flags, window.pop(0).body)
            assert m.dup
            got.append((m.packet_id, m.payload))
            back.send(b"\x40\x02" + m.packet_id.to_bytes(2, "big"))
            if len(got) + len(window) < 5:
                window.append(back.read())
        assert got == [(m.packet_id, m.payload) for m in sent]
        with pytest.raises(TimeoutError):
            back.read(1.0)  # each once
    finally:
        back.close()


def test_a_clean_start_ends_the_session_and_sends_its_delayed_will(
    ingress: Proc, node_b: Proc, clients: list[Mqtt5 | Mqtt]
) -> None:
    """§3.1.3.2.2: a delayed will goes out when the delay passes or the session ends,
    whichever comes first; a reconnect with Clean Start 1 ends it, here or on another node."""
    base = f"v5/{_uid()}/ended"
    watcher = _v5(ingress.mqtt_port, clients)
    watcher.connect()
    watcher.subscribe(f"{base}/#")
    session = Properties(session_expiry_interval=300)
    for where, port in (("here", ingress.mqtt_port), ("there", node_b.mqtt_port)):
        cid = f"{where}-{_uid()}"
        will = (f"{base}/{where}", b"session over", Properties(will_delay_interval=60))
        first = Raw5(ingress.mqtt_port, cid, session, will)
        first.close()  # no DISCONNECT: the will waits 60 s
        assert watcher.nothing(0.5)
        again = Raw5(port, cid, session, clean_start=True)
        try:
            got = watcher.expect(timeout=10)
            assert (got.topic, got.payload) == (f"{base}/{where}", b"session over")
        finally:
            again.close()
