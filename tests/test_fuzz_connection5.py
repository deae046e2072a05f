"""Property-based fuzzing of an MQTT 5 connection (hypothesis), as tests/test_fuzz_connection.py
does for 3.1.1 and on the same in-memory node: after an MQTT 5 CONNECT, streams of MQTT 5
packets (properties valid and not, subscription option bytes, acks with reason codes,
DISCONNECT with any code, AUTH) and garbage, cut into arbitrary reads. ``data_received`` never
raises, nothing is written after close, and a close after CONNACK is a DISCONNECT first."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ingress.wire import codec
from ingress.wire.packets5 import encode_ack5, encode_disconnect5, encode_publish5
from ingress.wire.properties import Properties, encode_properties
from tests.test_fuzz_connection import FUZZ, _cut, _drive, _packet, _packets, _s, garbage, pids

topics = st.sampled_from(["a", "a/b", "", "é/ü", "$x"])
filters = st.sampled_from(["a", "a/#", "+/b", "#", "$share/g/a", "bad#"])

valid_publish_props = st.builds(
    lambda alias, exp, ups, ct: encode_properties(
        Properties(topic_alias=alias, message_expiry_interval=exp, user_properties=ups,
                   content_type=ct),
        codec.PUBLISH,
    ),
    st.one_of(st.none(), st.integers(1, 70)),
    st.one_of(st.none(), st.integers(0, 5)),
    st.lists(st.tuples(st.sampled_from(["k", "bayou.x", "mqtt.y"]), st.just("v")), max_size=2),
    st.one_of(st.none(), st.just("text/plain")),
)  # fmt: skip
raw_props = st.binary(max_size=10).map(lambda b: bytes((len(b),)) + b)
publish5 = st.builds(
    lambda t, q, pid, retain, props, payload: encode_publish5(
        t, payload, q, pid if q else 0, retain, props
    ),
    topics, st.integers(0, 2), pids, st.booleans(), st.one_of(valid_publish_props, raw_props),
    st.binary(max_size=8),
)  # fmt: skip
subscribe5 = st.builds(
    lambda pid, props, fs: _packet(
        codec.SUBSCRIBE, 2,
        pid.to_bytes(2, "big") + props + b"".join(_s(f) + bytes((o,)) for f, o in fs),
    ),
    pids,
    st.one_of(st.just(b"\x00"), st.just(b"\x02\x0b\x05"), raw_props),
    st.lists(st.tuples(filters, st.integers(0, 255)), min_size=1, max_size=3),
)  # fmt: skip
unsubscribe5 = st.builds(
    lambda pid, fs: _packet(codec.UNSUBSCRIBE, 2, pid.to_bytes(2, "big") + b"\x00"
                            + b"".join(map(_s, fs))),
    pids, st.lists(filters, min_size=1, max_size=3),
)  # fmt: skip
acks5 = st.builds(
    encode_ack5,
    st.sampled_from([codec.PUBACK, codec.PUBREC, codec.PUBREL, codec.PUBCOMP]),
    pids,
    st.sampled_from([0, 0x10, 0x80, 0x92]),
    st.one_of(st.none(), st.just("why")),
)
disconnects5 = st.builds(lambda code: encode_disconnect5(code), st.sampled_from([0, 4, 0x80]))
auth = st.just(b"\xf0\x00")
anything5 = st.one_of(
    publish5, subscribe5, unsubscribe5, acks5, disconnects5, auth, garbage,
    st.just(b"\xc0\x00"),
)  # fmt: skip


@st.composite
def connect5(draw: st.DrawFn) -> bytes:
    props = draw(
        st.sampled_from([
            b"\x00",
            encode_properties(Properties(session_expiry_interval=10, receive_maximum=2,
                                         maximum_packet_size=64), codec.CONNECT),
            encode_properties(Properties(topic_alias_maximum=3), codec.CONNECT),
            encode_properties(Properties(authentication_method="X"), codec.CONNECT),
            b"\x03\x21\x00\x00",  # receive maximum 0: a protocol error
        ])
    )  # fmt: skip
    client_id = draw(st.sampled_from(["", "dev-5"]))
    body = b"\x00\x04MQTT\x05\x02\x00\x1e" + props + _s(client_id)
    return _packet(codec.CONNECT, 0, body)


@FUZZ
@given(
    first=connect5(),
    items=st.lists(anything5, max_size=12),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
    fail_kafka=st.booleans(),
)
def test_mqtt5_streams_never_raise_and_close_with_a_reason(
    first: bytes, items: list[bytes], cuts: list[int], fail_kafka: bool
) -> None:
    run = _drive(_cut(first + b"".join(items), cuts), fail_kafka)
    assert run.raised == []
    assert run.transport.after_close == []
    assert run.conn.closed == run.transport.is_closed
    written = _packets(run.transport.written)
    if written:
        assert written[0].type == codec.CONNACK
    accepted = bool(written) and written[0].body[1] == 0
    # A client the node accepted and then closed on hears why: a DISCONNECT last, unless it
    # left itself (its own DISCONNECT) or Kafka refused a write (no ack, closed: it resends).
    if accepted and run.transport.is_closed and written[-1].type != codec.DISCONNECT:
        stream = first + b"".join(items)
        assert b"\xe0" in stream or fail_kafka
