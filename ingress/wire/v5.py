"""What an MQTT 5 connection knows beyond 3.1.1: the client's limits, its topic aliases and
subscription options, and how the node's answers are phrased in MQTT 5 reason codes.

:class:`V5Client` is made from the CONNECT (:meth:`V5Client.from_connect`) and kept by the
connection (``conn.v5``; None for a 3.1.1 client). The packet codecs are in
:mod:`ingress.wire.packets5`, the properties in :mod:`ingress.wire.properties`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ingress.contract.topics import matches
from ingress.wire import reason_codes as rc
from ingress.wire.codec import PacketTooLarge, ProtocolError, encode_remaining_length
from ingress.wire.properties import AliasError, MalformedPacket, Properties

# The largest Session Expiry Interval: the session never expires (§3.1.2.11.2).
NEVER_EXPIRES = 0xFFFF_FFFF
SHUTDOWN = rc.SERVER_SHUTTING_DOWN
# The SUBSCRIBE user property that asks for history (docs/mqtt.md, "Replay subscriptions").
REPLAY_SINCE = "replay-since"

# CONNACK return codes of MQTT 3.1.1 (what the security layer answers) → MQTT 5 reason codes.
_REFUSALS = {
    1: rc.UNSUPPORTED_PROTOCOL_VERSION,
    2: rc.CLIENT_IDENTIFIER_NOT_VALID,
    3: rc.SERVER_UNAVAILABLE,
    4: rc.BAD_USER_NAME_OR_PASSWORD,
    5: rc.NOT_AUTHORIZED,
}
# Why the node closes a connection (``abort``'s metric kind) → DISCONNECT's reason code.
_DISCONNECTS = {
    "keepalive_timeout": rc.KEEP_ALIVE_TIMEOUT,
    "takeover": rc.SESSION_TAKEN_OVER,
    "packet_too_large": rc.PACKET_TOO_LARGE,
    "receive_maximum": rc.RECEIVE_MAXIMUM_EXCEEDED,
    "topic_alias": rc.TOPIC_ALIAS_INVALID,
    "quota": rc.QUOTA_EXCEEDED,
    "kafka": rc.UNSPECIFIED_ERROR,
}


def replay_since_ms(value: str, now_ms: int, max_seconds: int) -> int:
    """The wall-clock ms a ``replay-since`` value names: epoch milliseconds, or an ISO 8601
    time with its offset; no earlier than ``max_seconds`` ago. ValueError otherwise."""
    if value.isdigit():
        ms = int(value)
    else:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value[:64]!r} is neither epoch ms nor ISO 8601") from None
        if when.tzinfo is None:
            raise ValueError(f"{value[:64]!r} has no time zone offset")
        ms = int(when.timestamp() * 1000)
    if ms > now_ms:
        raise ValueError(f"{value[:64]!r} is in the future")
    if max_seconds <= 0:
        raise ValueError("replays are off (BAYOU_REPLAY_MAX_SECONDS=0)")
    return max(ms, now_ms - max_seconds * 1000)


def refusal_code(code: int) -> int:
    """The MQTT 5 CONNACK reason code for a 3.1.1 return code."""
    return _REFUSALS.get(code, rc.UNSPECIFIED_ERROR)


def disconnect_code(kind: str | None, exc: BaseException | None = None) -> int:
    """DISCONNECT's reason code when the node closes for ``kind`` (or because of ``exc``)."""
    if isinstance(exc, PacketTooLarge):
        return rc.PACKET_TOO_LARGE
    if isinstance(exc, AliasError):
        return rc.TOPIC_ALIAS_INVALID
    if isinstance(exc, MalformedPacket):
        return rc.MALFORMED_PACKET
    if isinstance(exc, ProtocolError):
        return rc.PROTOCOL_ERROR
    if kind == "malformed":
        return rc.MALFORMED_PACKET
    return _DISCONNECTS.get(kind or "", rc.UNSPECIFIED_ERROR)


@dataclass(frozen=True, slots=True)
class SubOptions:
    """An MQTT 5 subscription's options besides its QoS (§3.8.3.1)."""

    no_local: bool = False
    retain_as_published: bool = False
    identifier: int | None = None


@dataclass(slots=True)
class V5Client:
    """An MQTT 5 client's side of the connection."""

    # Request Problem Information: reason strings and user properties on acks allowed.
    problem_info: bool = True
    # The client's Maximum Packet Size: larger PUBLISH packets are not sent to it (0: none).
    max_packet_size: int = 0
    # The client's Receive Maximum: its QoS 1/2 messages in flight from the node.
    receive_maximum: int = 65535
    # Topic aliases the node may set towards the client: the client's Topic Alias Maximum,
    # capped by the node's (BAYOU_TOPIC_ALIAS_MAXIMUM) so a client cannot make it keep more.
    topic_alias_maximum: int = 0
    session_expiry: int = 0
    # Inbound topic aliases the client set: alias → topic name [MQTT-3.3.2-12].
    aliases: dict[int, str] = field(default_factory=dict)
    # Subscription options by filter (QoS is the connection's ``filters``).
    options: dict[str, SubOptions] = field(default_factory=dict)
    # Outbound topic aliases the node set: topic → alias, for this connection [MQTT-3.3.2-7].
    out_aliases: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_connect(cls, props: Properties, alias_cap: int = 0) -> V5Client:
        """The client's CONNECT properties (``alias_cap``: the node's own alias maximum)."""
        return cls(
            problem_info=props.request_problem_information is not False,
            max_packet_size=props.maximum_packet_size or 0,
            receive_maximum=props.receive_maximum or 65535,
            topic_alias_maximum=min(props.topic_alias_maximum or 0, alias_cap),
            session_expiry=props.session_expiry_interval or 0,
        )

    def options_record(self) -> dict[str, list[int]]:
        """The subscription options as the session record keeps them."""
        return {
            f: [int(o.no_local), int(o.retain_as_published), o.identifier or 0]
            for f, o in self.options.items()
        }

    def restore_options(self, record: dict[str, list[int]]) -> None:
        """Take the subscription options of a resumed session (see :meth:`options_record`)."""
        for f, (no_local, rap, ident) in ((f, v[:3]) for f, v in record.items()):
            self.options[f] = SubOptions(bool(no_local), bool(rap), ident or None)

    def fits(self, topic: str, payload: bytes, block: bytes, qos: int = 1) -> bool:
        """A PUBLISH of ``topic``, ``payload`` and property ``block`` is within the client's
        Maximum Packet Size (the whole packet, fixed header included)."""
        if not self.max_packet_size:
            return True
        remaining = 2 + len(topic.encode()) + (2 if qos else 0) + len(block) + len(payload)
        return 1 + len(encode_remaining_length(remaining)) + remaining <= self.max_packet_size

    def reason(self, text: str) -> str | None:
        """``text`` as a reason string, or None when the client asked for none [MQTT-3.1.2-29]
        or the packet would then exceed its Maximum Packet Size (a reason string is the first
        thing left out of a packet too large, §3.4.2.2.2)."""
        if not self.problem_info:
            return None
        # An ack or DISCONNECT: fixed header, id, code, property length, the string's header.
        if self.max_packet_size and 12 + len(text.encode()) > self.max_packet_size:
            return None
        return text

    def topic_of(self, topic: str, alias: int | None, maximum: int) -> str:
        """The topic of a PUBLISH, given its Topic Alias (§3.3.2.3.4); sets or uses the alias.

        Raises ProtocolError (the caller disconnects with 0x94 or 0x82).
        """
        if alias is None:
            if not topic:
                raise ProtocolError("PUBLISH with an empty topic and no topic alias")
            return topic
        if alias > maximum:
            raise AliasError(f"topic alias {alias} above the maximum {maximum}")
        if topic:
            self.aliases[alias] = topic
            return topic
        known = self.aliases.get(alias)
        if known is None:
            raise ProtocolError(f"topic alias {alias} used before it was set")
        return known

    def alias_out(self, topic: str) -> tuple[int, bool]:
        """The Topic Alias to send ``topic`` with, and whether the client knows it already
        (the alias then replaces the topic); 0 when none is left. The first topics sent get
        one each, for the connection; the caller records a new one once it is sent."""
        alias = self.out_aliases.get(topic)
        if alias is not None:
            return alias, True
        if len(self.out_aliases) < self.topic_alias_maximum:
            return len(self.out_aliases) + 1, False
        return 0, False

    def identifiers(self, topic: str, own: bool = False) -> list[int]:
        """The subscription identifiers of this client's subscriptions matching ``topic``
        (``own``: the client published it, so its No Local subscriptions do not count)."""
        return sorted(
            o.identifier
            for filt, o in self.options.items()
            if o.identifier is not None and not (own and o.no_local) and matches(filt, topic)
        )

    def local_only(self, topic: str, filters: dict[str, int]) -> bool:
        """Every subscription of the client matching ``topic`` is No Local: a message the
        client published itself is not sent back to it [MQTT-3.8.3-3]."""
        found = False
        for filt in filters:
            if matches(filt, topic):
                o = self.options.get(filt)
                if o is None or not o.no_local:
                    return False
                found = True
        return found

    def retain_as_published(self, topic: str, filters: dict[str, int]) -> bool:
        """A subscription matching ``topic`` keeps the RETAIN flag as published [MQTT-3.3.1-12]."""
        for filt in filters:
            o = self.options.get(filt)
            if o is not None and o.retain_as_published and matches(filt, topic):
                return True
        return False


def connack_properties(
    *,
    assigned_id: str | None,
    receive_maximum: int,
    max_packet_size: int,
    topic_alias_maximum: int,
    server_keep_alive: int | None,
) -> Properties:
    """What the node tells an MQTT 5 client in CONNACK: its limits, and what it does not do."""
    return Properties(
        assigned_client_identifier=assigned_id,
        # 65535 is what a client assumes when it is absent.
        receive_maximum=receive_maximum if receive_maximum < 65535 else None,
        maximum_packet_size=max_packet_size,
        topic_alias_maximum=topic_alias_maximum or None,
        server_keep_alive=server_keep_alive,
        # Shared subscriptions are available: said by leaving the property out (§3.2.2.3.15).
    )
