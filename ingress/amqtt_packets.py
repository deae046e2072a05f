"""CONNECT, SUBSCRIBE and UNSUBSCRIBE, decoded with amqtt's packet classes.

These packets are rare and intricate (will, credentials, flag rules), so Bayou reuses
amqtt's well-exercised decoders instead of writing its own. Their ``from_stream`` are
coroutines over a reader; over an in-memory :class:`amqtt.adapters.BufferReader` they
never suspend, so :func:`_run_sync` drives them to completion without an event loop hop.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from amqtt.adapters import BufferReader
from amqtt.mqtt.connect import ConnectPacket
from amqtt.mqtt.packet import MQTTFixedHeader
from amqtt.mqtt.subscribe import SubscribePacket
from amqtt.mqtt.unsubscribe import UnsubscribePacket

from ingress.codec import CONNECT, SUBSCRIBE, UNSUBSCRIBE, ProtocolError, encode_remaining_length

T = TypeVar("T")


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise ProtocolError("decoder waited for more data than the packet holds")


def _reader(ptype: int, flags: int, body: bytes) -> tuple[BufferReader, MQTTFixedHeader]:
    raw = bytes(((ptype << 4) | flags,)) + encode_remaining_length(len(body)) + body
    return BufferReader(raw), MQTTFixedHeader(ptype, flags, len(body))


@dataclass(slots=True)
class ConnectInfo:
    """What Bayou needs of a CONNECT."""

    protocol_name: str
    protocol_level: int
    client_id: str
    client_id_was_empty: bool
    clean_session: bool
    keep_alive: int
    username: str | None
    password: str | None
    will_topic: str | None
    will_message: bytes | None
    will_qos: int
    will_retain: bool
    reserved_flag: bool


def decode_connect(flags: int, body: bytes) -> ConnectInfo:
    """Decode a CONNECT body; raise ProtocolError when it is malformed."""
    if flags != 0:
        raise ProtocolError("CONNECT with non-zero fixed-header flags")
    reader, _ = _reader(CONNECT, flags, body)
    try:
        pkt = _run_sync(ConnectPacket.from_stream(reader))
    except ProtocolError:
        raise
    except Exception as exc:  # amqtt raises assorted errors on garbage
        raise ProtocolError(f"malformed CONNECT: {exc}") from exc
    vh, pl = pkt.variable_header, pkt.payload
    if vh is None or pl is None:
        raise ProtocolError("malformed CONNECT")
    will_message = pl.will_message
    return ConnectInfo(
        protocol_name=vh.proto_name,
        protocol_level=vh.proto_level,
        client_id="" if pl.client_id_is_random else (pl.client_id or ""),
        client_id_was_empty=bool(pl.client_id_is_random),
        clean_session=bool(vh.clean_session_flag),
        keep_alive=int(vh.keep_alive),
        username=pl.username,
        password=pl.password,
        will_topic=pl.will_topic if vh.will_flag else None,
        will_message=bytes(will_message) if (vh.will_flag and will_message is not None) else None,
        will_qos=int(vh.will_qos or 0) if vh.will_flag else 0,
        will_retain=bool(vh.will_retain_flag) if vh.will_flag else False,
        reserved_flag=bool(vh.reserved_flag),
    )


def decode_subscribe(flags: int, body: bytes) -> tuple[int, list[tuple[str, int]]]:
    """SUBSCRIBE → (packet id, [(filter, requested qos)])."""
    if flags != 0x02:
        raise ProtocolError("SUBSCRIBE with fixed-header flags other than 0010")
    reader, _ = _reader(SUBSCRIBE, flags, body)
    try:
        pkt = _run_sync(SubscribePacket.from_stream(reader))
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"malformed SUBSCRIBE: {exc}") from exc
    topics = [(str(t), int(q)) for t, q in (pkt.payload.topics if pkt.payload else [])]
    if not topics:
        raise ProtocolError("SUBSCRIBE with no topic filter")  # [MQTT-3.8.3-3]
    return int(pkt.variable_header.packet_id), topics


def decode_unsubscribe(flags: int, body: bytes) -> tuple[int, list[str]]:
    """UNSUBSCRIBE → (packet id, [filter])."""
    if flags != 0x02:
        raise ProtocolError("UNSUBSCRIBE with fixed-header flags other than 0010")
    reader, _ = _reader(UNSUBSCRIBE, flags, body)
    try:
        pkt = _run_sync(UnsubscribePacket.from_stream(reader))
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"malformed UNSUBSCRIBE: {exc}") from exc
    topics = [str(t) for t in (pkt.payload.topics if pkt.payload else [])]
    if not topics:
        raise ProtocolError("UNSUBSCRIBE with no topic filter")  # [MQTT-3.10.3-2]
    return int(pkt.variable_header.packet_id), topics
