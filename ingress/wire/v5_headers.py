"""MQTT 5 PUBLISH properties ⇄ Kafka headers (docs/mqtt.md, "MQTT 5 and Kafka").

A client's PUBLISH keeps its properties on the Kafka record: each user property becomes a
header of the same name and value (order and repeats kept), and content type, response topic,
correlation data, payload format indicator and message expiry get headers of the contract's
``mqtt.*`` names. On the way out, a record's headers become the properties of the PUBLISH an
MQTT 5 subscriber gets: every header outside Bayou's prefixes is a user property, so an agent
(or any Kafka producer) sets user properties by setting headers.

User property names under ``mqtt.`` and ``bayou.`` are refused: they would let a client forge
what only Bayou writes (a result id, an ingress time).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ingress.contract import (
    H_MQTT_CONTENT_TYPE,
    H_MQTT_CORRELATION_DATA,
    H_MQTT_EXPIRES_AT,
    H_MQTT_PAYLOAD_FORMAT,
    H_MQTT_RESPONSE_TOPIC,
    MQTT5_PROPERTY_HEADERS,
    Headers,
    is_user_property,
)
from ingress.wire.codec import PUBLISH
from ingress.wire.packets5 import NO_PROPERTIES
from ingress.wire.properties import Properties, encode_properties

log = logging.getLogger(__name__)


class ReservedUserProperty(ValueError):
    """A user property named under ``mqtt.`` or ``bayou.``: not written to Kafka."""


def inbound_headers(props: Properties, received_ms: int) -> Headers:
    """The Kafka headers that carry a client PUBLISH's properties (after the contract's own).

    Raises :class:`ReservedUserProperty` for a user property Bayou keeps for itself.
    """
    out: Headers = []
    if props.content_type is not None:
        out.append((H_MQTT_CONTENT_TYPE, props.content_type.encode()))
    if props.response_topic is not None:
        out.append((H_MQTT_RESPONSE_TOPIC, props.response_topic.encode()))
    if props.correlation_data is not None:
        out.append((H_MQTT_CORRELATION_DATA, props.correlation_data))
    if props.payload_format_indicator is not None:
        out.append((H_MQTT_PAYLOAD_FORMAT, b"%d" % props.payload_format_indicator))
    if props.message_expiry_interval is not None:
        expires = received_ms + props.message_expiry_interval * 1000
        out.append((H_MQTT_EXPIRES_AT, b"%d" % expires))
    for name, value in props.user_properties:
        if not is_user_property(name):
            raise ReservedUserProperty(
                f"user property {name!r}: names starting with 'mqtt.' or 'bayou.' are Bayou's"
            )
        out.append((name, value.encode()))
    return out


def expires_at(headers: Iterable[tuple[str, bytes]]) -> int | None:
    """The record's expiry (wall-clock ms), or None when it never expires."""
    for k, v in headers:
        if k == H_MQTT_EXPIRES_AT:
            try:
                return int(v)
            except ValueError:
                return None
    return None


def outbound_properties(headers: Iterable[tuple[str, bytes]], now_ms: int) -> Properties:
    """The properties of the PUBLISH an MQTT 5 subscriber gets for a record with ``headers``:
    the v5 ones, the remaining expiry interval (rounded up, at least 1 s), and every other
    header outside Bayou's prefixes as a user property (headers whose name or value is not
    UTF-8 text cannot be one and are left out). A header too long for an MQTT string (65,535
    bytes) is left out too: one record of any Kafka producer must not stop delivery."""
    props = Properties()
    for k, v in headers:
        if len(v) > _MAX_FIELD or len(k) > _MAX_FIELD:
            continue
        if k in MQTT5_PROPERTY_HEADERS:
            if k == H_MQTT_CONTENT_TYPE:
                props.content_type = _text(v)
            elif k == H_MQTT_RESPONSE_TOPIC:
                props.response_topic = _text(v)
            elif k == H_MQTT_CORRELATION_DATA:
                props.correlation_data = v
            elif k == H_MQTT_PAYLOAD_FORMAT:
                props.payload_format_indicator = 1 if v == b"1" else 0
            else:
                try:
                    left_ms = int(v) - now_ms
                except ValueError:
                    continue
                # The interval that is left [MQTT-3.3.2-6]; a message due now still has 1 s.
                props.message_expiry_interval = min(_MAX_EXPIRY, max(1, -(-left_ms // 1000)))
        elif is_user_property(k):
            text = _text(v)
            if text is not None and "\x00" not in k:
                props.user_properties.append((k, text))
    return props


def encode_block(props: Properties) -> bytes:
    """``props`` as a PUBLISH's property block; without them (and a warning) when no MQTT
    packet can carry them: one record must not stop a node's delivery."""
    try:
        return encode_properties(props, PUBLISH)
    except ValueError as exc:
        log.warning("record's properties cannot be sent (%s): sent without them", exc)
        return NO_PROPERTIES


def publish_block(
    headers: Iterable[tuple[str, bytes]], now_ms: int, sub_ids: list[int] | None = None
) -> bytes:
    """The property block of the PUBLISH an MQTT 5 subscriber gets for a record with
    ``headers``, with the identifiers of its matching subscriptions."""
    props = outbound_properties(headers, now_ms)
    props.subscription_identifiers = sub_ids or []
    return encode_block(props)


# The longest MQTT string or binary field, and the largest four-byte interval.
_MAX_FIELD = 0xFFFF
_MAX_EXPIRY = 0xFFFF_FFFF


def _text(v: bytes) -> str | None:
    try:
        text = v.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text
