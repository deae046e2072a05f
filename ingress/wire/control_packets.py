"""CONNECT, SUBSCRIBE and UNSUBSCRIBE: strict decoders for the rare, intricate packets.

These were decoded with amqtt's packet classes, and are not any more, because amqtt's
decoders are lenient where MQTT 3.1.1 requires closing the connection: a string that is not
UTF-8 becomes the text of its ``repr`` (``"b'\\xff'"``) instead of an error [MQTT-1.5.3-1],
U+0000 passes [MQTT-1.5.3-2], the binary password is decoded as text (so a non-UTF-8 password
cannot be checked), a will flag without will topic and message is accepted as no will
[MQTT-3.1.2-9], will QoS and retain without the will flag pass [MQTT-3.1.2-13, -15], and
fields missing at the end of a packet, or bytes after the last one, are ignored. Fixing that
meant reading every field again, so the fields are read here, with :mod:`ingress.wire.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingress.wire.codec import CONNECT, ProtocolError
from ingress.wire.properties import WILL, MalformedPacket, Properties, decode_properties
from ingress.wire.validate import (
    CLEAN_SESSION_FLAG,
    PASSWORD_FLAG,
    RESERVED_FLAG,
    USERNAME_FLAG,
    WILL_FLAG,
    WILL_QOS_MASK,
    WILL_RETAIN_FLAG,
    check_connect_flags,
    check_packet_end,
    read_binary,
    read_string,
    read_u16,
)


@dataclass(slots=True)
class ConnectInfo:
    """What Bayou needs of a CONNECT.

    For a protocol other than MQTT 3.1.1 (level 4) and MQTT 5 (level 5) only the protocol
    fields are read (the connection answers CONNACK 0x01 [MQTT-3.1.2-2]); the rest is left
    empty. ``clean_session`` is MQTT 5's Clean Start; ``properties`` and ``will_properties``
    are MQTT 5's (None for 3.1.1).
    """

    protocol_name: str
    protocol_level: int
    client_id: str = ""
    client_id_was_empty: bool = False
    clean_session: bool = False
    keep_alive: int = 0
    username: str | None = None
    password: bytes | None = None  # binary data, never decoded (§3.1.3.5)
    will_topic: str | None = None
    will_message: bytes | None = None
    will_qos: int = 0
    will_retain: bool = False
    reserved_flag: bool = False
    properties: Properties | None = None
    will_properties: Properties | None = None


def _check_flags(flags: int, expected: int, name: str) -> None:
    if flags != expected:
        raise ProtocolError(f"{name} with fixed-header flags {flags:04b}")  # [MQTT-2.2.2-2]


def decode_connect(flags: int, body: bytes) -> ConnectInfo:
    """Decode a CONNECT body; raise ProtocolError when it is malformed."""
    _check_flags(flags, 0, "CONNECT")
    raw_name, pos = read_binary(body, 0, "CONNECT protocol name")
    if len(body) < pos + 4:
        raise ProtocolError("CONNECT ends inside its variable header")
    name = raw_name.decode("utf-8", "replace")  # only compared with "MQTT"
    level, cflags = body[pos], body[pos + 1]
    keep_alive, pos = read_u16(body, pos + 2, "CONNECT keep alive")
    if name != "MQTT" or level not in (4, 5):
        return ConnectInfo(name, level)
    v5 = level == 5
    try:
        check_connect_flags(cflags, v5)
    except ProtocolError as exc:
        # MQTT 5 classes a broken CONNECT flag as a Malformed Packet [MQTT-3.1.2-3 and on].
        raise (MalformedPacket(str(exc)) if v5 else exc) from None
    props = None
    if v5:
        props, pos = decode_properties(body, pos, CONNECT)
    client_id, pos = read_string(body, pos, "client id")  # [MQTT-3.1.3-4]
    info = ConnectInfo(
        protocol_name=name,
        protocol_level=level,
        client_id=client_id,
        client_id_was_empty=not client_id,
        clean_session=bool(cflags & CLEAN_SESSION_FLAG),
        keep_alive=keep_alive,
        reserved_flag=bool(cflags & RESERVED_FLAG),
        properties=props,
    )
    if cflags & WILL_FLAG:
        if v5:
            info.will_properties, pos = decode_properties(body, pos, WILL)
        # [MQTT-3.1.2-9]: with the will flag, will topic and will message MUST be present.
        info.will_topic, pos = read_string(body, pos, "will topic")
        info.will_message, pos = read_binary(body, pos, "will message")
        info.will_qos = (cflags & WILL_QOS_MASK) >> 3
        info.will_retain = bool(cflags & WILL_RETAIN_FLAG)
    if cflags & USERNAME_FLAG:
        info.username, pos = read_string(body, pos, "user name")  # [MQTT-3.1.2-19]
    if cflags & PASSWORD_FLAG:
        info.password, pos = read_binary(body, pos, "password")  # [MQTT-3.1.2-21]
    check_packet_end(body, pos, "CONNECT")
    return info


def connect_level(body: bytes) -> int | None:
    """The protocol level of a CONNECT body, if it can be read (to answer a CONNECT that
    failed to decode in its own protocol version's terms)."""
    if len(body) < 2:
        return None
    pos = 2 + ((body[0] << 8) | body[1])
    return body[pos] if pos < len(body) else None


def decode_subscribe(flags: int, body: bytes) -> tuple[int, list[tuple[str, int]]]:
    """SUBSCRIBE → (packet id, [(filter, requested qos)])."""
    _check_flags(flags, 0x02, "SUBSCRIBE")
    pid, pos = _packet_id(body, "SUBSCRIBE")
    topics: list[tuple[str, int]] = []
    while pos < len(body):
        filt, pos = read_string(body, pos, "SUBSCRIBE topic filter")
        if pos >= len(body):
            raise ProtocolError("SUBSCRIBE topic filter without its QoS byte")
        qos = body[pos]
        if qos > 2:
            # Reserved bits or QoS 3: malformed [MQTT-3.8.3-4].
            raise ProtocolError(f"SUBSCRIBE requested QoS byte {qos:#04x}")
        topics.append((filt, qos))
        pos += 1
    if not topics:
        raise ProtocolError("SUBSCRIBE with no topic filter")  # [MQTT-3.8.3-3]
    return pid, topics


def decode_unsubscribe(flags: int, body: bytes) -> tuple[int, list[str]]:
    """UNSUBSCRIBE → (packet id, [filter])."""
    _check_flags(flags, 0x02, "UNSUBSCRIBE")
    pid, pos = _packet_id(body, "UNSUBSCRIBE")
    topics: list[str] = []
    while pos < len(body):
        filt, pos = read_string(body, pos, "UNSUBSCRIBE topic filter")
        topics.append(filt)
    if not topics:
        raise ProtocolError("UNSUBSCRIBE with no topic filter")  # [MQTT-3.10.3-2]
    return pid, topics


def _packet_id(body: bytes, name: str) -> tuple[int, int]:
    pid, pos = read_u16(body, 0, f"{name} packet identifier")
    if pid == 0:
        raise ProtocolError(f"{name} with packet identifier 0")  # [MQTT-2.3.1-1]
    return pid, pos
