"""MQTT 5 properties for agents: read those of the record an agent got, set those of what it
publishes (docs/agents.md, "MQTT 5 properties").

The ingress keeps a client's PUBLISH properties as Kafka headers (the record contract in
:mod:`ingress.contract`: user properties as headers of their own name, ``mqtt.content_type``
and the others) and turns a record's headers back into properties for MQTT 5 subscribers. This
module is the agents' side of the same mapping: :class:`Properties` is what ``ctx.properties``
shows, :func:`headers_for` what ``ctx.publish(..., user_properties=...)`` writes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ingress.contract import (
    H_MQTT_CONTENT_TYPE,
    H_MQTT_CORRELATION_DATA,
    H_MQTT_EXPIRES_AT,
    H_MQTT_PAYLOAD_FORMAT,
    H_MQTT_RESPONSE_TOPIC,
    is_user_property,
)

UserProperties = Mapping[str, str] | Sequence[tuple[str, str]]
Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Properties:
    """The MQTT 5 properties of an input record (all empty for a 3.1.1 publish)."""

    user_properties: tuple[tuple[str, str], ...] = ()
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    payload_utf8: bool | None = None
    expires_at_ms: int | None = None

    def user_property(self, name: str) -> str | None:
        """The first value of user property ``name``, or None."""
        for k, v in self.user_properties:
            if k == name:
                return v
        return None


EMPTY = Properties()


def properties_of(headers: Iterable[tuple[str, bytes]]) -> Properties:
    """The MQTT 5 properties carried by a record's headers."""
    users: list[tuple[str, str]] = []
    ct = rt = None
    corr: bytes | None = None
    utf8: bool | None = None
    expires: int | None = None
    for k, v in headers:
        if k == H_MQTT_CONTENT_TYPE:
            ct = v.decode("utf-8", "replace")
        elif k == H_MQTT_RESPONSE_TOPIC:
            rt = v.decode("utf-8", "replace")
        elif k == H_MQTT_CORRELATION_DATA:
            corr = v
        elif k == H_MQTT_PAYLOAD_FORMAT:
            utf8 = v == b"1"
        elif k == H_MQTT_EXPIRES_AT:
            expires = int(v) if v.isdigit() else None
        elif is_user_property(k):
            try:
                users.append((k, v.decode("utf-8")))
            except UnicodeDecodeError:
                continue  # a binary header of another Kafka producer: not a user property
    if not (users or ct or rt or corr is not None or utf8 is not None or expires is not None):
        return EMPTY
    return Properties(tuple(users), ct, rt, corr, utf8, expires)


def headers_for(
    *,
    user_properties: UserProperties | None = None,
    content_type: str | None = None,
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
    message_expiry: float | None = None,
) -> Headers:
    """The headers that give an agent's MQTT message these properties; ValueError for a user
    property under Bayou's own prefixes (``mqtt.``, ``bayou.``) or a bad value."""
    out: list[tuple[str, bytes]] = []
    if content_type is not None:
        out.append((H_MQTT_CONTENT_TYPE, content_type.encode()))
    if response_topic is not None:
        out.append((H_MQTT_RESPONSE_TOPIC, response_topic.encode()))
    if correlation_data is not None:
        if not isinstance(correlation_data, bytes):
            raise ValueError("correlation_data must be bytes")
        out.append((H_MQTT_CORRELATION_DATA, correlation_data))
    if message_expiry is not None:
        if not message_expiry > 0:
            raise ValueError("message_expiry must be > 0 seconds")
        expires = time.time_ns() // 1_000_000 + int(message_expiry * 1000)
        out.append((H_MQTT_EXPIRES_AT, b"%d" % expires))
    pairs = user_properties.items() if isinstance(user_properties, Mapping) else user_properties
    for name, value in pairs or ():
        if not is_user_property(name):
            raise ValueError(
                f"user property {name!r}: names under 'mqtt.' and 'bayou.' are Bayou's"
            )
        out.append((name, str(value).encode()))
    return tuple(out)
