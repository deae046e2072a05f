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
from amqtt.mqtt.subscribe import SubscribePacket
from amqtt.mqtt.unsubscribe import UnsubscribePacket

from ingress.wire.codec import (
    CONNECT,
    SUBSCRIBE,
    UNSUBSCRIBE,
    ProtocolError,
    encode_remaining_length,
)

T = TypeVar("T")


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise ProtocolError("decoder waited for more data than the packet holds")


def _decode(cls: Any, ptype: int, flags: int, body: bytes, expected_flags: int) -> Any:
    """Decode one packet with amqtt's class ``cls``; every failure is a ProtocolError."""
    name = cls.__name__.removesuffix("Packet").upper()
    if flags != expected_flags:
        raise ProtocolError(f"{name} with fixed-header flags {flags:04b}")  # [MQTT-2.2.2-2]
    raw = bytes(((ptype << 4) | flags,)) + encode_remaining_length(len(body)) + body
    try:
        return _run_sync(cls.from_stream(BufferReader(raw)))
    except ProtocolError:
        raise
    except Exception as exc:  # amqtt raises assorted errors on garbage
        raise ProtocolError(f"malformed {name}: {exc}") from exc


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
    pkt = _decode(ConnectPacket, CONNECT, flags, body, 0)
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
    pkt = _decode(SubscribePacket, SUBSCRIBE, flags, body, 0x02)
    topics = [(str(t), int(q)) for t, q in (pkt.payload.topics if pkt.payload else [])]
    if not topics:
        raise ProtocolError("SUBSCRIBE with no topic filter")  # [MQTT-3.8.3-3]
    return int(pkt.variable_header.packet_id), topics


def decode_unsubscribe(flags: int, body: bytes) -> tuple[int, list[str]]:
    """UNSUBSCRIBE → (packet id, [filter])."""
    pkt = _decode(UnsubscribePacket, UNSUBSCRIBE, flags, body, 0x02)
    topics = [str(t) for t in (pkt.payload.topics if pkt.payload else [])]
    if not topics:
        raise ProtocolError("UNSUBSCRIBE with no topic filter")  # [MQTT-3.10.3-2]
    return int(pkt.variable_header.packet_id), topics
