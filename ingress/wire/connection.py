"""One MQTT 3.1.1 client connection: an ``asyncio.Protocol`` over Bayou's own framer.

Where a PUBLISH enters the node: ``data_received`` cuts the bytes into packets
(:mod:`ingress.wire.codec`) and hands each PUBLISH to the inbound path (:mod:`ingress.inbound`),
which writes it to Kafka; the PUBACK leaves from here once Kafka has it. Outbound messages are
written here by the outbound path (:mod:`ingress.outbound.send`), which records them in the
connection's :class:`~ingress.wire.outbound_state.OutboundState`.

The connection knows its node only as :class:`ConnectionNode`: what it needs, not the class.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ingress.config import IngressConfig
from ingress.contract.topics import (
    TopicError,
    matches,
    shared_filter,
    validate_topic_filter,
    validate_topic_name,
)
from ingress.inbound import Inbound
from ingress.metrics import (
    BYTES_IN_TOTAL,
    BYTES_OUT_TOTAL,
    LIMIT_REFUSALS_TOTAL,
    PROTOCOL_ERRORS_TOTAL,
)
from ingress.security.acl import ClientAcl
from ingress.security.certs import peer_cert_of
from ingress.security.guard import Guard, denied
from ingress.security.identity import Credentials, Identity, Refused
from ingress.security.limits import TokenBucket
from ingress.state.retained import RetainedStore
from ingress.state.subscriptions import SubscriptionTable
from ingress.wire import codec
from ingress.wire import reason_codes as rc
from ingress.wire.codec import ProtocolError
from ingress.wire.control_packets import (
    ConnectInfo,
    connect_level,
    decode_connect,
    decode_subscribe,
    decode_unsubscribe,
)
from ingress.wire.outbound_state import OutboundState
from ingress.wire.packets5 import (
    Subscription5,
    decode_ack5,
    decode_disconnect5,
    decode_publish5,
    decode_subscribe5,
    decode_unsubscribe5,
    encode_ack5,
    encode_connack5,
    encode_disconnect5,
    encode_publish5,
    encode_suback5,
    encode_unsuback5,
)
from ingress.wire.properties import AUTH, Properties
from ingress.wire.v5 import (
    REPLAY_SINCE,
    SHUTDOWN,
    SubOptions,
    V5Client,
    connack_properties,
    disconnect_code,
    refusal_code,
    replay_since_ms,
)
from ingress.wire.v5_headers import (
    ReservedUserProperty,
    expires_at,
    inbound_headers,
    publish_block,
)

log = logging.getLogger(__name__)

# CONNACK return codes (MQTT 3.1.1 §3.2.2.3).
CONNACK_ACCEPTED = 0
CONNACK_BAD_PROTOCOL = 1
CONNACK_IDENTIFIER_REJECTED = 2
NOT_AUTHORIZED = 5

# Highest QoS this node grants.
MAX_QOS = 2


_PLAIN = SubOptions()
# send_publish's arguments, for a retained message waiting for the client's window.
RetainedSend = tuple[str, bytes, int, bool, list[int] | None, tuple[tuple[str, bytes], ...]]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Will:
    """A client's will message, published if it goes away without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    # MQTT 5 will properties (user properties, content type...): record headers when it is
    # published, so its Message Expiry Interval counts from then (§3.1.3.2.4).
    properties: Properties | None = None
    # MQTT 5 Will Delay Interval (s): published that long after the connection ends, unless
    # the client connects again first [MQTT-3.1.3-9].
    delay: int = 0


class Shares(Protocol):
    """The node's shared subscriptions (:class:`ingress.outbound.shared.SharedSubscriptions`)."""

    def join(self, conn: MQTTConnection, filt: str, qos: int) -> None:
        """``conn`` subscribed to the shared subscription ``filt``."""

    def leave(self, conn: MQTTConnection, filt: str) -> None:
        """``conn`` unsubscribed from ``filt``."""

    def forget(self, conn: MQTTConnection) -> None:
        """``conn``'s connection ended."""


class ConnectionNode(Protocol):
    """What a connection needs of its node (:class:`ingress.node.IngressNode` provides it)."""

    @property
    def config(self) -> IngressConfig: ...

    @property
    def inbound(self) -> Inbound: ...

    @property
    def subscriptions(self) -> SubscriptionTable[MQTTConnection]: ...

    @property
    def retained(self) -> RetainedStore: ...

    @property
    def shares(self) -> Shares: ...

    @property
    def guard(self) -> Guard: ...

    def connection_opened(self, conn: MQTTConnection) -> None:
        """A TCP connection arrived (no CONNECT yet)."""

    def client_connected(self, conn: MQTTConnection, clean: bool) -> bool:
        """CONNECT accepted: set up the session; return CONNACK's session-present flag."""

    def connection_closed(self, conn: MQTTConnection) -> None:
        """The connection is gone: save or drop its session, forget it."""

    def assign_client_id(self) -> str:
        """A client id for a CONNECT with an empty one, unique across nodes."""

    def subscriptions_changed(self) -> None:
        """A client subscribed or unsubscribed."""

    def window_opened(self, conn: MQTTConnection) -> None:
        """A connection catching up has room in its in-flight window again."""

    def delay_will(self, client_id: str, seconds: float, publish: Callable[[], None]) -> None:
        """Run ``publish`` in ``seconds`` unless ``client_id`` connects again first (here or
        on another node)."""

    def replay_offsets(self, since_ms: int) -> asyncio.Future[dict[tuple[str, int], int]]:
        """Per delivery partition, the first offset at or after ``since_ms``."""

    def start_replay(
        self,
        conn: MQTTConnection,
        filters: list[str],
        starts: Mapping[tuple[str, int], int],
        since_ms: int,
    ) -> bool:
        """Send ``conn`` the history of ``filters`` from ``starts``, then live."""


class MQTTConnection(asyncio.Protocol):
    """Parses a client's packets and acts on them; closes the connection on any violation."""

    def __init__(self, node: ConnectionNode) -> None:
        self.node = node
        self.framer = codec.Framer(node.config.max_packet_size)
        self.transport: asyncio.Transport | None = None
        self.client_id: str | None = None
        # UTF-8 of the client id, encoded once for the headers of every publish.
        self.client_id_utf8 = b""
        self.keep_alive = 0
        self.last_seen = time.monotonic()
        # Subscription filter → granted QoS; the node's subscription table mirrors it.
        self.filters: dict[str, int] = {}
        # QoS 1 publishes awaiting Kafka, in arrival order: PUBACKs leave in that order.
        # Each is [packet id, Kafka writes outstanding, ack packet type, MQTT 5 reason code].
        self._acks: deque[list[int]] = deque()
        # QoS 1 publishes in _acks: with the QoS 2 ones before PUBREL (qos2_in), what counts
        # against MQTT 5's Receive Maximum.
        self._acks_qos1 = 0
        # QoS 2 publishes of THIS connection before PUBREL: Receive Maximum is not carried
        # over from an earlier connection of the session (§4.9).
        self._qos2_here: set[int] = set()
        # MQTT 5: retained messages (QoS 1/2) waiting for the client's Receive Maximum to let
        # them out [MQTT-3.3.4-9]; they refer to the store's payloads, no copy.
        self._retained_wait: deque[RetainedSend] = deque()
        self._flush_scheduled = False
        self.outbound = OutboundState(node.config.max_inflight_out)
        # clean session = 0 (ingress/session_manager.py keeps its session).
        self.persistent = False
        self.connected_ms = 0
        self.taken_over = False
        self._session_ended = False
        # Filters subscribed in the last seconds → when (ms): a publish received by a node
        # before that moment may still be on its way through Kafka, and is not delivered.
        self.fresh: dict[str, int] = {}
        self._held: list[bytes] | None = None
        self._holds = 0
        # Inbound QoS 2 packet ids before PUBREL: False until PUBREC went out [MQTT-4.3.3].
        self.qos2_in: dict[int, bool] = {}
        self.closed = False
        self.peer = "?"
        self.will: Will | None = None
        # MQTT 5 only (protocol level 5): what the client asked for, its aliases and
        # subscription options (ingress/wire/v5.py); None for MQTT 3.1.1.
        self.v5: V5Client | None = None
        # Who authenticated, and the ACL as it applies to them (None: no ACL configured).
        self.identity: Identity | None = None
        self.acl: ClientAcl | None = None
        limits = node.config.security.limits
        self._max_payload = limits.max_payload_size
        self._max_subscriptions = limits.max_subscriptions_per_client
        self._publish_rate = limits.publish_rate_per_client
        self._bucket: TokenBucket | None = None
        self._throttled = False
        self._debt = 0
        # Packets received while CONNECT is being authenticated (None: not authenticating).
        self._held_packets: list[codec.Packet] | None = None
        self._forget_deferred = False

    # asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.node.connection_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.will is not None:
            # Closed without DISCONNECT: socket loss, keep-alive timeout, protocol error or
            # takeover [MQTT-3.1.2-8].
            will = self.will
            client_id = self.client_id or ""

            def publish(inbound: Inbound = self.node.inbound) -> None:
                extra = None
                if will.properties is not None:
                    extra = inbound_headers(will.properties, _now_ms())
                inbound.publish_will(
                    client_id, will.topic, will.payload, will.qos, will.retain, extra
                )

            delay = will.delay
            if delay and self.v5 is not None:
                # The will waits no longer than the session lasts [MQTT-3.1.3-9].
                delay = min(delay, self.v5.session_expiry) if self.persistent else 0
            if not delay:
                publish()
            elif not self.taken_over:
                self.node.delay_will(client_id, delay, publish)
            elif self._session_ended:  # taken over with a clean start: the session is over
                publish()
            # else: taken over by a new connection of the session: no will
            self.will = None
        self.node.subscriptions.remove_all(self, list(self.filters))
        self.node.shares.forget(self)
        # Until QoS 2 publishes on their way to Kafka settle, the session is not saved yet.
        self._forget_deferred = self._qos2_writing()
        if not self._forget_deferred:
            self._forget()

    def _forget(self) -> None:
        for pid, left, ack_type, code in self._acks:
            # In Kafka, PUBREC not sent yet (a refused one was never written: not kept).
            if ack_type == codec.PUBREC and left == 0 and not code:
                self.qos2_in[pid] = True
        # The node saves the session (naming ``filters``) and forgets the connection.
        self.node.connection_closed(self)
        self.filters.clear()
        self.node.subscriptions_changed()

    def _qos2_writing(self) -> bool:
        """A QoS 2 publish of this connection is still on its way to Kafka."""
        return any(slot[2] == codec.PUBREC and slot[1] > 0 for slot in self._acks)

    def _acked_after_close(self) -> None:
        """A write settled after the connection closed; the last QoS 2 one saves the session.

        The client never got PUBREC, so it resends on its next connection: an id Kafka has
        goes into the session, and the resend is not written again [MQTT-4.3.3-2].
        """
        if self._forget_deferred and not self._qos2_writing():
            self._forget_deferred = False
            self._forget()

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        BYTES_IN_TOTAL.inc(len(data))
        try:
            packets = self.framer.feed(data)
        except ProtocolError as exc:
            self.abort(str(exc), exc=exc)
            return
        if self._held_packets is not None:
            # CONNECT is being authenticated: the rest waits for its answer.
            self._held_packets += packets
        else:
            self._process(packets)

    def _process(self, packets: list[codec.Packet]) -> None:
        try:
            for i, pkt in enumerate(packets):
                if self.closed:
                    return
                self._handle(pkt)
                if self._held_packets is not None:
                    self._held_packets += packets[i + 1 :]
                    return
        except ProtocolError as exc:
            self.abort(str(exc), exc=exc)

    # packets ----------------------------------------------------------------------------

    def _handle(self, pkt: codec.Packet) -> None:
        t = pkt.type
        codec.check_fixed_header(pkt, self.v5 is not None)
        if self.client_id is None:
            if t != codec.CONNECT:
                raise ProtocolError(f"packet type {t} before CONNECT")  # [MQTT-3.1.0-1]
            try:
                self._on_connect(pkt)
            except ProtocolError as exc:
                if self.v5 is not None and self.client_id is None:
                    # An MQTT 5 CONNECT refused for what it holds (a will topic, a reserved
                    # user property): CONNACK says why before the close [MQTT-4.13.1-1].
                    self.write(encode_connack5(disconnect_code(None, exc), False, Properties()))
                raise
        elif t == codec.PUBLISH:
            self._on_publish(pkt)
        elif t in (codec.PUBACK, codec.PUBREC, codec.PUBCOMP):
            self._on_outbound_ack(pkt)
        elif t == codec.PUBREL:
            self._on_pubrel(pkt)
        elif t == codec.PINGREQ:
            self.write(codec.PINGRESP_BYTES)
        elif t == codec.SUBSCRIBE:
            self._on_subscribe(pkt)
        elif t == codec.UNSUBSCRIBE:
            self._on_unsubscribe(pkt)
        elif t == codec.DISCONNECT:
            if self.v5 is not None:
                self._on_disconnect5(pkt)
                return
            self.will = None  # [MQTT-3.1.2-10]: a clean disconnect discards the will
            self.close()
        elif t == codec.CONNECT:
            raise ProtocolError("second CONNECT")  # [MQTT-3.1.0-2]
        elif t == AUTH and self.v5 is not None:
            # Enhanced authentication was not started (no Authentication Method) [MQTT-4.12.0-1].
            raise ProtocolError("AUTH without an authentication method in CONNECT")
        else:
            raise ProtocolError(f"unsupported packet type {t}")

    def _on_connect(self, pkt: codec.Packet) -> None:
        try:
            info = decode_connect(pkt.flags, pkt.body)
        except ProtocolError as exc:
            if connect_level(pkt.body) == 5:
                # MQTT 5: say why in a CONNACK before closing [MQTT-4.13.1-1].
                self.write(encode_connack5(disconnect_code(None, exc), False, Properties()))
            raise
        if info.protocol_name != "MQTT" or info.protocol_level not in (4, 5):
            # [MQTT-3.1.2-2]: answer 0x01, then close.
            self.write(codec.encode_connack(CONNACK_BAD_PROTOCOL))
            self.abort(
                f"unsupported protocol {info.protocol_name!r} level {info.protocol_level}",
                "unsupported_protocol",
            )
            return
        if info.reserved_flag:
            raise ProtocolError("CONNECT reserved flag set")  # [MQTT-3.1.2-3]
        if info.properties is not None:
            self.v5 = V5Client.from_connect(info.properties, self.node.config.topic_alias_maximum)
            if info.properties.authentication_method is not None:
                # Enhanced authentication (§4.12): Bayou supports no method.
                self._refuse(rc.BAD_AUTHENTICATION_METHOD, "enhanced authentication")
                return
        elif info.client_id_was_empty and not info.clean_session:
            self.write(codec.encode_connack(CONNACK_IDENTIFIER_REJECTED))  # [MQTT-3.1.3-8]
            self.abort("empty client id without clean session", "identifier_rejected")
            return
        will = None
        if info.will_topic is not None:
            try:
                validate_topic_name(info.will_topic)
            except TopicError as exc:
                raise ProtocolError(f"invalid will topic: {exc}") from exc
            if info.will_qos > 2:
                raise ProtocolError("will QoS 3")  # [MQTT-3.1.2-14]
            if info.will_properties is not None:
                try:  # checked now: a will the node could not publish refuses the CONNECT
                    inbound_headers(info.will_properties, 0)
                except ReservedUserProperty as exc:
                    raise ProtocolError(str(exc)) from exc
            delay = 0
            if info.will_properties is not None:
                delay = info.will_properties.will_delay_interval or 0
            will = Will(
                info.will_topic, info.will_message or b"", info.will_qos, info.will_retain,
                info.will_properties, delay,
            )  # fmt: skip
        # An assigned id names the node too: ids must not collide across nodes (takeover).
        client_id = info.client_id or self.node.assign_client_id()
        guard = self.node.guard
        creds = Credentials(
            client_id,
            info.username,
            info.password,
            peer_cert_of(self.transport) if self.transport is not None else None,
            self.peer,
        )
        if guard.executor is None:
            try:
                identity = guard.authenticate(creds)
            except Refused as exc:
                self._refuse(exc.code, "authentication failed")
                return
            self._connected(info, client_id, will, identity)
            return
        # A password hash takes tens of milliseconds of CPU: off the event loop, so other
        # clients are not kept waiting; the socket is not read until the answer is in.
        self._held_packets = []
        if self.transport is not None:
            self.transport.pause_reading()
        future = asyncio.get_running_loop().run_in_executor(
            guard.executor, guard.authenticate, creds
        )
        future.add_done_callback(lambda f: self._authenticated(f, info, client_id, will))

    def _authenticated(
        self, future: asyncio.Future[Identity], info: ConnectInfo, client_id: str, will: Will | None
    ) -> None:
        if self.closed:
            return
        exc = future.exception()
        if isinstance(exc, Refused):
            self._refuse(exc.code, "authentication failed")
            return
        if exc is not None:
            log.error("client %r: authentication failed unexpectedly: %r", client_id, exc)
            self._refuse(NOT_AUTHORIZED, "authentication error")
            return
        held, self._held_packets = self._held_packets or [], None
        if not self._connected(info, client_id, will, future.result()):
            return
        if self.transport is not None:
            self.transport.resume_reading()
        self._process(held)

    def _refuse(self, code: int, reason: str) -> None:
        """CONNACK ``code`` (a 3.1.1 return code, or an MQTT 5 reason code from 0x80) and
        close; no will is published: the client never connected."""
        self._held_packets = None
        if self.v5 is not None:
            v5_code = code if code >= 0x80 else refusal_code(code)
            self.write(encode_connack5(v5_code, False, Properties()))
        else:
            self.write(codec.encode_connack(code))
        self.abort(reason, None)

    def _connected(
        self, info: ConnectInfo, client_id: str, will: Will | None, identity: Identity
    ) -> bool:
        """Accept an authenticated CONNECT (unless the ACL refuses its will); True if accepted."""
        guard = self.node.guard
        if guard.config.auth.username_as_client_id and identity.username:
            client_id = identity.username
        acl = guard.client_acl(identity, client_id)
        if will is not None and acl is not None and not acl.publish(will.topic):
            # As mosquitto does: a will the client may not publish refuses the CONNECT,
            # rather than silently never sending it.
            denied("will")
            self._refuse(NOT_AUTHORIZED, "will topic denied by the ACL")
            return False
        self.identity = identity
        self.acl = acl
        self.will = will
        self.client_id = client_id
        self.client_id_utf8 = client_id.encode()
        self.keep_alive = info.keep_alive
        self.connected_ms = int(time.time() * 1000)
        v5 = self.v5
        if v5 is None:
            self.persistent = not info.clean_session
            present = self.node.client_connected(self, info.clean_session)
            # A resumed session's catch-up runs as a task, so its messages follow this CONNACK.
            self.write(codec.encode_connack(CONNACK_ACCEPTED, session_present=present))
            return True
        config = self.node.config
        # MQTT 5: the session outlives the connection only for a Session Expiry Interval.
        self.persistent = v5.session_expiry > 0
        self.outbound.max_inflight = min(self.outbound.max_inflight, v5.receive_maximum)
        server_keep_alive = None
        if config.max_keep_alive and not 0 < info.keep_alive <= config.max_keep_alive:
            server_keep_alive = self.keep_alive = config.max_keep_alive  # [MQTT-3.2.2-21]
        present = self.node.client_connected(self, info.clean_session)
        props = connack_properties(
            assigned_id=client_id if info.client_id_was_empty else None,
            receive_maximum=config.receive_maximum,
            max_packet_size=config.max_packet_size,
            topic_alias_maximum=config.topic_alias_maximum,
            server_keep_alive=server_keep_alive,
        )
        self.write(encode_connack5(rc.SUCCESS, present, props))
        return True

    def _on_publish(self, pkt: codec.Packet) -> None:
        v5 = self.v5
        extra: list[tuple[str, bytes]] | None = None
        refused = 0  # MQTT 5: the reason code of a publish refused, not written
        if v5 is None:
            topic, qos, pid, retain, _dup, payload = codec.decode_publish(pkt.flags, pkt.body)
        else:
            pub = decode_publish5(pkt.flags, pkt.body)
            props = pub.properties
            qos, pid, retain, payload = pub.qos, pub.packet_id, pub.retain, pub.payload
            topic = pub.topic
            if props is not None:
                if props.subscription_identifiers:
                    raise ProtocolError("PUBLISH from a client with a subscription identifier")
                if props.response_topic is not None:
                    try:
                        validate_topic_name(props.response_topic)  # [MQTT-3.3.2-14]
                    except TopicError as exc:
                        raise ProtocolError(f"Response Topic: {exc}") from exc
                if props.topic_alias is not None or not topic:
                    topic = v5.topic_of(
                        topic, props.topic_alias, self.node.config.topic_alias_maximum
                    )
                try:
                    extra = inbound_headers(props, _now_ms())
                except ReservedUserProperty as exc:
                    refused = rc.IMPLEMENTATION_SPECIFIC_ERROR
                    log.info("client %s: publish to %s refused: %s", self.client_id, topic, exc)
                if props.payload_format_indicator == 1 and not refused and not _is_utf8(payload):
                    refused = rc.PAYLOAD_FORMAT_INVALID  # a receiver may check it (§3.3.2.3.2)
            elif not topic:
                raise ProtocolError("PUBLISH with an empty topic and no topic alias")
            if qos and pid not in self.qos2_in:
                if self._acks_qos1 + len(self._qos2_here) >= self.node.config.receive_maximum:
                    # [MQTT-3.3.4-8]: more unacknowledged publishes than Receive Maximum.
                    self.abort("Receive Maximum exceeded", "receive_maximum")
                    return
        try:
            validate_topic_name(topic)
        except TopicError as exc:
            raise ProtocolError(str(exc)) from exc
        if self._max_payload and len(payload) > self._max_payload:
            # MQTT 3.1.1 has no negative acknowledgement: closing is the only refusal a
            # client notices (it resends on reconnect, and fails there the same way).
            LIMIT_REFUSALS_TOTAL.labels("max_payload").inc()
            log.warning(
                "closing client %s (%s): payload of %d bytes exceeds BAYOU_MAX_PAYLOAD_SIZE=%d",
                self.client_id, self.peer, len(payload), self._max_payload,
            )  # fmt: skip
            self.abort("payload too large", None)
            return
        if self._publish_rate:
            self._throttle()
        if qos == 2 and pid in self.qos2_in:
            # A resend before PUBREL: already written (or being written) to Kafka once.
            # [MQTT-4.3.3-2] answer PUBREC again once it is in Kafka, write nothing.
            if self.qos2_in[pid]:
                self.write(codec.encode_ack(codec.PUBREC, pid))
            return
        allowed = not refused and (self.acl is None or self.acl.publish(topic))
        if not allowed and not refused:
            # Not written to Kafka; acknowledged all the same in MQTT 3.1.1, which has no way
            # to refuse a PUBLISH (mosquitto does the same); MQTT 5 says 0x87.
            denied("publish")
            refused = rc.NOT_AUTHORIZED
        if qos == 0:
            if allowed:
                self.node.inbound.publish(self, topic, 0, retain, payload, None, extra)
            return
        writes = (2 if retain else 1) if allowed else 0
        slot = [pid, writes, codec.PUBACK if qos == 1 else codec.PUBREC, refused]
        if qos == 2:
            # MQTT 5: a refused QoS 2 publish ends at its PUBREC (a reason code from 0x80).
            if not refused or v5 is None:
                self.qos2_in[pid] = False
                self._qos2_here.add(pid)
        else:
            self._acks_qos1 += 1
        self._acks.append(slot)
        if not allowed:
            # Its acknowledgement still waits for the publishes before it [MQTT-4.6.0-2].
            self._schedule_flush()
            return
        done = lambda exc: self._acked(slot, exc)  # noqa: E731
        self.node.inbound.publish(self, topic, qos, retain, payload, done, extra)

    def _throttle(self) -> None:
        """Take a token for this PUBLISH; out of tokens, stop reading the socket until the
        client's debt is paid (back-pressure: nothing received is dropped, the client waits).

        Packets already read in the same chunk are handled, and owed: the pause lasts until
        the bucket has refilled for them too, so a client cannot beat the rate with big reads.
        """
        now = time.monotonic()
        bucket = self._bucket
        if bucket is None:
            limits = self.node.config.security.limits
            bucket = self._bucket = TokenBucket(
                self._publish_rate, limits.publish_burst_per_client, now
            )
        if self._throttled:
            self._debt += 1
            return
        if bucket.take(1, now) or self.transport is None:
            return
        self._throttled = True
        self._debt = 1
        LIMIT_REFUSALS_TOTAL.labels("publish_rate").inc()
        self.transport.pause_reading()
        asyncio.get_running_loop().call_later(bucket.wait_time(1, now), self._unthrottle)

    def _unthrottle(self) -> None:
        bucket = self._bucket
        if bucket is None or self.closed or self.transport is None:
            return
        now = time.monotonic()
        while self._debt:
            part = min(self._debt, int(bucket.burst))
            if not bucket.take(part, now):
                asyncio.get_running_loop().call_later(bucket.wait_time(part, now), self._unthrottle)
                return
            self._debt -= part
        self._throttled = False
        self.transport.resume_reading()

    def _acked(self, slot: list[int], exc: BaseException | None) -> None:
        if self.closed:
            if slot[1] > 0:  # -1: a write of this publish failed, it is not in the session
                slot[1] = slot[1] - 1 if exc is None else -1
                self._acked_after_close()
            return
        if exc is not None:
            slot[1] = -1
            # Not in Kafka: no PUBACK/PUBREC. Closing makes the client resend on reconnect.
            log.warning(
                "client %s: Kafka write failed (%s); closing, no acknowledgement",
                self.client_id,
                exc,
            )
            self.abort("Kafka write failed", None)
            return
        slot[1] -= 1
        if slot[1] == 0:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            # Acks arrive in batches; one write per connection per batch, not per PUBACK.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_acks)

    def _flush_acks(self) -> None:
        # In the order the PUBLISH packets arrived [MQTT-4.6.0-2].
        self._flush_scheduled = False
        acks = self._acks
        out = bytearray()
        v5 = self.v5
        while acks and acks[0][1] == 0:
            pid, _, ack_type, code = acks.popleft()
            if ack_type == codec.PUBREC:
                if pid in self.qos2_in:
                    self.qos2_in[pid] = True
            else:
                self._acks_qos1 -= 1
            if v5 is None:
                out += codec.encode_ack(ack_type, pid)
            else:
                reason = v5.reason(rc.name(code)) if code else None
                out += encode_ack5(ack_type, pid, code, reason)
        if out:
            self.write(bytes(out))

    def _on_pubrel(self, pkt: codec.Packet) -> None:
        if pkt.flags != 0x02:
            raise ProtocolError("PUBREL with fixed-header flags other than 0010")
        v5 = self.v5
        if v5 is None:
            pid = codec.decode_packet_id(pkt.body)
        else:
            pid, _code = decode_ack5(pkt.body, codec.PUBREL)
        if self.qos2_in.get(pid) is False:
            # PUBREC not sent yet (Kafka has not acknowledged): a conforming client never
            # sends PUBREL before PUBREC.
            raise ProtocolError("PUBREL before PUBREC")
        known = self.qos2_in.pop(pid, None) is not None
        self._qos2_here.discard(pid)
        if v5 is None or known:
            self.write(codec.encode_ack(codec.PUBCOMP, pid))  # [MQTT-4.3.3-2]
        else:
            code = rc.PACKET_IDENTIFIER_NOT_FOUND
            self.write(encode_ack5(codec.PUBCOMP, pid, code, v5.reason(rc.name(code))))

    def _on_outbound_ack(self, pkt: codec.Packet) -> None:
        code = 0
        if self.v5 is None:
            pid = codec.decode_packet_id(pkt.body)
        else:
            pid, code = decode_ack5(pkt.body, pkt.type)
        if self.outbound.commands and pkt.type != codec.PUBCOMP:
            command = self.outbound.commands.pop(pid, None)
            if command is None:
                pass
            elif code < 0x80:
                self.node.inbound.command_delivered(command, self.client_id or "")
            else:  # a refusal is no delivery
                self.node.inbound.command_refused(command, self.client_id or "", code)
        if pkt.type == codec.PUBREC and code < 0x80:
            self.outbound.pubrec(pid)
            self.write(codec.encode_ack(codec.PUBREL, pid))
        elif self.outbound.complete(pid):
            # PUBACK or PUBCOMP ends the flow, and so does a PUBREC refusing the message.
            self.node.window_opened(self)
        wait = self._retained_wait
        while wait and len(self.outbound.inflight) < self.outbound.max_inflight:
            self.send_publish(*wait.popleft())

    def _on_subscribe(self, pkt: codec.Packet) -> None:
        v5 = self.v5
        sub_id: int | None = None
        wanted: list[tuple[str, int, Subscription5 | None]]
        if v5 is None:
            pid, topics = decode_subscribe(pkt.flags, pkt.body)
            self._subscribe(pid, [(filt, qos, None) for filt, qos in topics], None)
            return
        pid, props, subs = decode_subscribe5(pkt.body)
        if props.subscription_identifiers:
            sub_id = props.subscription_identifiers[0]
        wanted = [(sub.topic_filter, sub.qos, sub) for sub in subs]
        since = next((v for k, v in props.user_properties if k == REPLAY_SINCE), None)
        if since is None:
            self._subscribe(pid, wanted, sub_id)
            return
        try:
            since_ms = replay_since_ms(since, _now_ms(), self.node.config.replay_max_seconds)
        except ValueError as exc:
            self._refuse_subscribe(pid, len(wanted), f"{REPLAY_SINCE}: {exc}")
            return
        if self.outbound.catching_up:
            self._refuse_subscribe(pid, len(wanted), "catching up: ask for a replay later")
            return
        # The offsets are Kafka's answer: the client's later packets wait for it, as they do
        # for a password check.
        self._held_packets = []
        if self.transport is not None:
            self.transport.pause_reading()
        future = self.node.replay_offsets(since_ms)
        future.add_done_callback(lambda f: self._replay_ready(f, pid, wanted, sub_id, since_ms))

    def _replay_ready(
        self,
        future: asyncio.Future[dict[tuple[str, int], int]],
        pid: int,
        wanted: list[tuple[str, int, Subscription5 | None]],
        sub_id: int | None,
        since_ms: int,
    ) -> None:
        if self.closed:
            return
        held, self._held_packets = self._held_packets or [], None
        exc = future.exception()
        if exc is not None:
            log.warning("client %s: replay lookup failed: %s", self.client_id, exc)
            self._refuse_subscribe(pid, len(wanted), "replay: Kafka did not answer")
        elif self.outbound.catching_up:  # it fell behind while Kafka answered
            self._refuse_subscribe(pid, len(wanted), "catching up: ask for a replay later")
        else:
            self._subscribe(pid, wanted, sub_id, (future.result(), since_ms))
        if self.transport is not None and not self._throttled:
            self.transport.resume_reading()
        self._process(held)

    def _refuse_subscribe(self, pid: int, n: int, reason: str) -> None:
        assert self.v5 is not None
        code = rc.IMPLEMENTATION_SPECIFIC_ERROR
        self.write(encode_suback5(pid, [code] * n, self.v5.reason(reason)))

    def _subscribe(
        self,
        pid: int,
        wanted: list[tuple[str, int, Subscription5 | None]],
        sub_id: int | None,
        replay: tuple[Mapping[tuple[str, int], int], int] | None = None,
    ) -> None:
        """Subscribe to ``wanted`` and answer SUBACK; with ``replay`` (start offsets, since),
        the granted filters get their history first (then live)."""
        v5 = self.v5
        # MQTT 3.1.1 has one failure code, 0x80; MQTT 5 says why.
        failure = 0x80 if v5 is None else 0
        codes: list[int] = []
        granted_filters: list[tuple[str, int]] = []
        replayed: list[str] = []
        for filt, qos, opts in wanted:
            if qos > 2:
                raise ProtocolError("SUBSCRIBE with QoS 3")  # [MQTT-3-8.3-4]
            try:
                validate_topic_filter(filt)
                shared = shared_filter(filt)
            except TopicError:
                codes.append(failure or rc.TOPIC_FILTER_INVALID)
                continue
            if shared is not None and opts is not None and opts.no_local:
                raise ProtocolError("No Local on a shared subscription")  # [MQTT-3.8.3-4]
            # A shared subscription is checked as the filter its members receive.
            checked = filt if shared is None else shared[1]
            if self.acl is not None and not self.acl.subscribe(checked):
                denied("subscribe")
                codes.append(failure or rc.NOT_AUTHORIZED)
                continue
            new = filt not in self.filters
            if self._max_subscriptions and new and len(self.filters) >= self._max_subscriptions:
                LIMIT_REFUSALS_TOTAL.labels("max_subscriptions").inc()
                codes.append(failure or rc.QUOTA_EXCEEDED)
                continue
            granted = min(qos, MAX_QOS)
            if new:
                # A replaced subscription stays as old as it was [MQTT-3.8.4-3].
                self.fresh[filt] = int(time.time() * 1000)
            self.filters[filt] = granted
            if shared is None:
                self.node.subscriptions.subscribe(self, filt, granted)
            else:
                self.node.shares.join(self, filt, granted)
            codes.append(granted)
            handling = 0
            if v5 is not None and opts is not None:
                o = SubOptions(opts.no_local, opts.retain_as_published, sub_id)
                # Only options that change delivery are kept: a client without any costs
                # delivery nothing more than a 3.1.1 one.
                if o == _PLAIN:
                    v5.options.pop(filt, None)
                else:
                    v5.options[filt] = o
                handling = opts.retain_handling
            if shared is not None:
                continue  # no retained messages, no replay: each message goes to one member
            # Retain Handling: 0 sends retained messages, 1 only for a new subscription, 2
            # never [MQTT-3.3.1-9, -10, -11]; MQTT 3.1.1 always sends them. A replay sends
            # the history instead.
            replayed.append(filt)
            if replay is None and (handling == 0 or (handling == 1 and new)):
                granted_filters.append((filt, granted))
        if v5 is None:
            self.write(codec.encode_suback(pid, codes))
        else:
            self.write(encode_suback5(pid, codes))
        # Retained messages matching a new subscription follow its SUBACK [MQTT-3.3.1-6].
        ids = [] if sub_id is None else [sub_id]
        for filt, granted in granted_filters:
            for topic, payload, qos, extra in self.node.retained.matching(filt):
                if self.acl is not None and not self.acl.receive(topic):
                    denied("receive")
                    continue
                self.send_publish(topic, payload, min(qos, granted), True, ids, extra)
        if replay is not None and replayed:
            for filt in replayed:
                self.fresh.pop(filt, None)  # live delivery from the boundary on, all of it
            self.node.start_replay(self, replayed, replay[0], replay[1])
        self.node.subscriptions_changed()

    def _on_unsubscribe(self, pkt: codec.Packet) -> None:
        v5 = self.v5
        if v5 is None:
            pid, topics = decode_unsubscribe(pkt.flags, pkt.body)
        else:
            pid, topics = decode_unsubscribe5(pkt.body)
        codes: list[int] = []
        for filt in topics:
            if self.filters.pop(filt, None) is not None:
                if filt.startswith("$share/"):
                    self.node.shares.leave(self, filt)
                else:
                    self.node.subscriptions.unsubscribe(self, filt)
                codes.append(rc.SUCCESS)
            else:
                codes.append(rc.NO_SUBSCRIPTION_EXISTED)
            if v5 is not None:
                v5.options.pop(filt, None)
        if v5 is None:
            self.write(codec.encode_ack(codec.UNSUBACK, pid))
        else:
            self.write(encode_unsuback5(pid, codes))
        self.node.subscriptions_changed()

    def _on_disconnect5(self, pkt: codec.Packet) -> None:
        """An MQTT 5 client's DISCONNECT: its reason code says whether the will is sent, and
        it may change the Session Expiry Interval."""
        assert self.v5 is not None
        code, props = decode_disconnect5(pkt.body)
        expiry = props.session_expiry_interval
        if expiry is not None:
            if self.v5.session_expiry == 0 and expiry > 0:
                # [MQTT-3.14.2-2]: a session that was to end may not be kept at the end.
                raise ProtocolError("DISCONNECT sets a Session Expiry Interval after 0")
            self.v5.session_expiry = expiry
            self.persistent = expiry > 0
        if code != rc.DISCONNECT_WITH_WILL:
            self.will = None  # [MQTT-3.14.4-3]
        self.close()

    # session ----------------------------------------------------------------------------

    def resume(
        self,
        subscriptions: Mapping[str, int],
        qos2_in: list[int],
        options: dict[str, list[int]] | None = None,
    ) -> None:
        """Take the subscriptions, inbound QoS 2 ids and (MQTT 5) subscription options of a
        resumed session."""
        self.qos2_in = dict.fromkeys(qos2_in, True)
        if self.v5 is not None and options:
            self.v5.restore_options(options)
        for filt, qos in subscriptions.items():
            self.filters[filt] = qos
            if filt.startswith("$share/"):
                self.node.shares.join(self, filt, qos)
            else:
                self.node.subscriptions.subscribe(self, filt, qos)

    def take_over(self, ends_session: bool = False) -> None:
        """Close: the client id connected again, on this node or another one
        (``ends_session``: with a clean start, so a delayed will goes out now)."""
        self.taken_over = True
        self._session_ended = ends_session
        if self.v5 is not None:
            self._write_last(encode_disconnect5(rc.SESSION_TAKEN_OVER))  # [MQTT-3.1.4-3]
        self.close()

    def shutdown(self) -> None:
        """Close because the node stops (MQTT 5: DISCONNECT 0x8B first)."""
        if self.v5 is not None and self.client_id is not None:
            self._write_last(encode_disconnect5(SHUTDOWN))
        self.close()

    def forget_fresh(self, wall_ms: float) -> None:
        """Subscriptions older than 10 s are no longer fresh (nothing can still be on its way)."""
        for filt, since in list(self.fresh.items()):
            if wall_ms - since > 10_000:
                del self.fresh[filt]

    # outbound ---------------------------------------------------------------------------

    def send_publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool = False,
        sub_ids: list[int] | None = None,
        extra: tuple[tuple[str, bytes], ...] = (),
    ) -> None:
        """Send one PUBLISH outside the batched delivery path (retained messages, with
        their MQTT 5 properties as ``extra`` headers)."""
        now_ms = _now_ms()
        if extra and (exp := expires_at(extra)) is not None and exp <= now_ms:
            return  # an expired retained message is not sent [MQTT-3.3.2-5]
        v5 = self.v5
        if v5 is None:
            pid = self.outbound.track(None, 0, 0, qos) if qos else 0
            self.write(codec.encode_publish(topic, payload, qos, pid, retain))
            return
        if qos and len(self.outbound.inflight) >= self.outbound.max_inflight:
            self._retained_wait.append((topic, payload, qos, retain, sub_ids, extra))
            return  # sent as the client's acknowledgements make room [MQTT-3.3.4-9]
        block = publish_block(extra, now_ms, sub_ids)
        if not v5.fits(topic, payload, block):
            return  # [MQTT-3.1.2-25]: not sent to a client that could not take it
        pid = self.outbound.track(None, 0, 0, qos) if qos else 0
        self.write(encode_publish5(topic, payload, qos, pid, retain, block))

    def published_before_subscribing(self, topic: str, received_ms: int) -> bool:
        """True if every filter matching ``topic`` was subscribed after ``received_ms``.

        Delivery goes through Kafka, so a publish acknowledged before a SUBSCRIBE can reach
        the node after it; the new subscription must not get it (it got the retained
        message instead, if any).
        """
        matched = False
        for filt in self.filters:
            if matches(filt, topic):
                since = self.fresh.get(filt)
                if since is None or since <= received_ms:
                    return False
                matched = True
        return matched

    def pause_writing(self) -> None:
        self.outbound.writes_paused(True)  # over max_write_buffer: see ingress/outbound/live.py

    def resume_writing(self) -> None:
        if self.outbound.writes_paused(False):
            self.node.window_opened(self)

    def write(self, data: bytes) -> None:
        """Send bytes unless the connection is closing (or hold them, see :meth:`hold`)."""
        if self._held is not None:
            self._held.append(data)
        elif self.transport is not None and not self.closed:
            BYTES_OUT_TOTAL.inc(len(data))
            self.transport.write(data)

    def _write_last(self, data: bytes) -> None:
        """Write the packet that precedes a close (a DISCONNECT): past any held writes, which
        the close drops (they wait for a session save that will not be sent now)."""
        if self.transport is not None and not self.closed:
            BYTES_OUT_TOTAL.inc(len(data))
            self.transport.write(data)

    def hold(self) -> None:
        """Keep writes back until the matching :meth:`release` (nests; order is kept)."""
        self._holds += 1
        if self._held is None:
            self._held = []

    def release(self) -> None:
        """End one :meth:`hold`; the last one sends everything held, in order."""
        self._holds -= 1
        if self._holds <= 0:
            self._holds = 0
            held, self._held = self._held, None
            if held:
                self.write(b"".join(held))

    def close(self) -> None:
        """Close after pending writes are flushed."""
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def abort(
        self, reason: str, kind: str | None = "malformed", exc: BaseException | None = None
    ) -> None:
        """Close this one client because of ``reason`` (or ``exc``); log one line.

        ``kind`` is the metric label, from a fixed set (the reason text carries client
        input, which must not create metric series); None: not a client error, not counted.
        An MQTT 5 client that was accepted gets a DISCONNECT saying why first [MQTT-4.13.1-1].
        """
        if self.closed:
            return
        if self.v5 is not None and self.client_id is not None:
            code = disconnect_code(kind, exc)
            self._write_last(encode_disconnect5(code, self.v5.reason(reason[:200])))
        if kind is not None:
            PROTOCOL_ERRORS_TOTAL.labels(kind).inc()
            log.warning("closing client %s (%s): %s", self.client_id or "-", self.peer, reason)
        self.close()
