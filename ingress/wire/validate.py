"""Strict readers for the fields of MQTT 3.1.1 packets, and the CONNECT flag rules.

Every failure is a :class:`~ingress.wire.codec.ProtocolError`: the connection is closed. The
readers work on a ``bytes`` body and an offset, and return the value with the next offset.
"""

from __future__ import annotations

from ingress.wire.codec import ProtocolError

# CONNECT flags (MQTT 3.1.1 §3.1.2.3).
USERNAME_FLAG = 0x80
PASSWORD_FLAG = 0x40
WILL_RETAIN_FLAG = 0x20
WILL_QOS_MASK = 0x18
WILL_FLAG = 0x04
CLEAN_SESSION_FLAG = 0x02
RESERVED_FLAG = 0x01


def read_u16(body: bytes, pos: int, what: str) -> tuple[int, int]:
    """A two-byte big-endian integer at ``pos``."""
    if pos + 2 > len(body):
        raise ProtocolError(f"{what}: packet ends before its two-byte field")
    return (body[pos] << 8) | body[pos + 1], pos + 2


def read_binary(body: bytes, pos: int, what: str) -> tuple[bytes, int]:
    """Length-prefixed binary data (§1.5.3): the will message, the password. Not decoded."""
    length, pos = read_u16(body, pos, what)
    end = pos + length
    if end > len(body):
        raise ProtocolError(f"{what}: {length} bytes announced, the packet ends first")
    return body[pos:end], end


def utf8_string(raw: bytes, what: str) -> str:
    """Decode an MQTT UTF-8 string; ill-formed UTF-8 or U+0000 is a ProtocolError.

    Python's strict decoder already refuses what [MQTT-1.5.3-1] forbids: invalid and
    overlong sequences and encoded surrogates (U+D800..U+DFFF); U+0000 is [MQTT-1.5.3-2].
    A BOM (U+FEFF) is kept as it is [MQTT-1.5.3-3].
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{what} is not well-formed UTF-8") from exc  # [MQTT-1.5.3-1]
    if "\x00" in text:
        raise ProtocolError(f"{what} contains U+0000")  # [MQTT-1.5.3-2]
    return text


def read_string(body: bytes, pos: int, what: str) -> tuple[str, int]:
    """A length-prefixed UTF-8 string (§1.5.3), checked by :func:`utf8_string`."""
    raw, pos = read_binary(body, pos, what)
    return utf8_string(raw, what), pos


def check_connect_flags(flags: int, v5: bool = False) -> None:
    """The CONNECT flag rules; raise ProtocolError when one is broken. MQTT 5 allows a
    password without a user name (§3.1.2.9); 3.1.1 does not."""
    if flags & RESERVED_FLAG:
        raise ProtocolError("CONNECT reserved flag set")  # [MQTT-3.1.2-3]
    will_qos = (flags & WILL_QOS_MASK) >> 3
    if flags & WILL_FLAG:
        if will_qos == 3:
            raise ProtocolError("will QoS 3")  # [MQTT-3.1.2-14]
    else:
        if will_qos:
            raise ProtocolError("will QoS set without the will flag")  # [MQTT-3.1.2-13]
        if flags & WILL_RETAIN_FLAG:
            raise ProtocolError("will retain set without the will flag")  # [MQTT-3.1.2-15]
    if flags & PASSWORD_FLAG and not flags & USERNAME_FLAG and not v5:
        raise ProtocolError("password flag set without the user name flag")  # [MQTT-3.1.2-22]


def check_packet_end(body: bytes, pos: int, what: str) -> None:
    """Nothing may follow the last field: a longer remaining length is malformed."""
    if pos != len(body):
        raise ProtocolError(f"{what}: {len(body) - pos} bytes after the last field")
