"""Sessions on a node: resume, catch-up from Kafka, checkpoint, takeover across nodes.

Every CONNECT writes an ownership record to ``bayou.sessions`` (owner = node and connection
start time). Every node reads that topic, so when a client id connects on another node, the
node holding the older connection closes it (session takeover across nodes). Persistent
sessions are checkpointed every second while connected and saved on disconnect; outbound
QoS 2 messages of a persistent session are sent only once the session record naming them is
in Kafka, so a resumed session resends them with the same packet id and never twice.

The manager keeps the session of each connection itself; it knows its node only as
:class:`SessionNode`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from ingress.config import IngressConfig
from ingress.kafka.producer import IngestProducer
from ingress.metrics import (
    SESSIONS_CREATED_TOTAL,
    SESSIONS_EXPIRED_TOTAL,
    SESSIONS_RESUMED_TOTAL,
    TAKEOVERS_TOTAL,
)
from ingress.state.sessions import Pending, SessionState, SessionStore
from ingress.wire.connection import MQTTConnection
from kafkaio.reader import TP

log = logging.getLogger(__name__)


class SessionNode(Protocol):
    """What the session manager needs of its node (:class:`ingress.node.IngressNode`)."""

    @property
    def config(self) -> IngressConfig: ...

    @property
    def producer(self) -> IngestProducer: ...

    @property
    def clients(self) -> Mapping[str, MQTTConnection]:
        """Client id → its connection on this node."""

    @property
    def positions(self) -> Mapping[TP, int]:
        """Per delivery partition, the next offset live delivery hands over."""

    def start_catch_up(
        self, conn: MQTTConnection, served: Mapping[TP, int], pending: list[Pending]
    ) -> None:
        """Take ``conn`` off live delivery and bring it up to date from Kafka."""


class SessionManager:
    """The session side of a node: the session of each connection, and the sessions index."""

    def __init__(self, node: SessionNode) -> None:
        self.node = node
        self.store = SessionStore()
        self.store.owner_listeners.append(self._on_record)
        self._sessions: dict[MQTTConnection, SessionState] = {}

    # connect / disconnect ----------------------------------------------------------------

    def owner_of(self, conn: MQTTConnection) -> str:
        """The owner token written for a connection: node id and connection start (ms)."""
        return f"{self.node.config.node_id}/{conn.connected_ms}"

    def connect(self, conn: MQTTConnection, clean: bool, handed: SessionState | None) -> bool:
        """Set up the session of a new connection; return CONNACK's session-present flag.

        ``handed`` is the state of an older connection of the same client id on this node.
        """
        assert conn.client_id is not None
        stored = handed if handed is not None else self.store.get(conn.client_id)
        if stored is not None and stored.expired(int(time.time() * 1000)):
            stored = None  # MQTT 5: gone longer than its Session Expiry Interval
        # ``clean`` is 3.1.1's Clean Session or MQTT 5's Clean Start: the previous session is
        # discarded [MQTT-3.1.2-6], and session present is 0 [MQTT-3.2.2-1]. Whether the new
        # one outlives the connection is ``conn.persistent`` (3.1.1: not clean; MQTT 5: a
        # Session Expiry Interval above 0).
        present = not clean and stored is not None and not stored.clean
        if present:
            assert stored is not None
            state = stored
            SESSIONS_RESUMED_TOTAL.inc()
        elif conn.persistent:
            state = SessionState(conn.client_id, served=dict(self.node.positions))
            SESSIONS_CREATED_TOTAL.inc()
        else:
            # The record written here only claims the client id for takeover across nodes.
            state = SessionState(conn.client_id, clean=True)
        state.owner = self.owner_of(conn)
        state.gone_ms = 0
        state.clean_start = clean
        self._sessions[conn] = state
        if present or conn.persistent:
            conn.resume(state.subscriptions, state.qos2_in, state.options)
            if present:
                self.node.start_catch_up(conn, state.served, state.pending)
        # A resumed session of an MQTT 5 client with Session Expiry 0 ends with the connection.
        state.clean = not conn.persistent
        self.save(conn)
        return present

    def disconnected(self, conn: MQTTConnection) -> None:
        """Save (persistent) or drop (clean) the session of a closed connection."""
        state = self._sessions.get(conn)
        if state is None:
            return
        if not conn.taken_over:
            # An MQTT 5 DISCONNECT may have set the Session Expiry Interval to 0.
            if state.clean or not conn.persistent:
                self.write_session(state.client_id, None)
            else:
                self.save(conn, owner="", gone=True)
        del self._sessions[conn]

    def snapshot(self, conn: MQTTConnection) -> SessionState:
        """A copy of the connection's session as it stands now."""
        base = self._sessions[conn]
        if base.clean:
            return SessionState(base.client_id, owner=base.owner, clean=True)
        v5 = conn.v5
        return SessionState(
            client_id=base.client_id,
            subscriptions=dict(conn.filters),
            served=conn.outbound.served(self.node.positions),
            pending=[Pending(*entry) for entry in conn.outbound.pending()],
            qos2_in=[pid for pid, sent in conn.qos2_in.items() if sent],
            owner=base.owner,
            expiry_s=None if v5 is None else v5.session_expiry,
            options={} if v5 is None else v5.options_record(),
            seen_ms=int(time.time() * 1000),
            clean_start=base.clean_start,
        )

    def save(
        self,
        conn: MQTTConnection,
        owner: str | None = None,
        then: Callable[[BaseException | None], None] | None = None,
        gone: bool = False,
    ) -> None:
        """Write the connection's session record; ``then`` runs once Kafka has it (or not).
        ``gone``: the client has just left (its Session Expiry Interval starts now)."""
        state = self.snapshot(conn)
        if owner is not None:
            state.owner = owner
        if gone:
            state.gone_ms = int(time.time() * 1000)
        self.write_session(state.client_id, state.to_bytes(), then)

    def save_then_release(self, conn: MQTTConnection) -> None:
        """Save, and release the connection's held writes once the record is in Kafka.

        Used for outbound QoS 2: the client must never get a QoS 2 PUBLISH that a resumed
        session would not know about (it would be sent again, as a new message).
        """

        def saved(exc: BaseException | None) -> None:
            if exc is not None:
                log.warning("session %s not saved (%s): closing it", conn.client_id, exc)
                conn.abort("session save failed", None)
                return
            conn.release()

        self.save(conn, then=saved)

    def write_session(
        self,
        client_id: str,
        value: bytes | None,
        then: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        """Write a session record (None: a tombstone) to the sessions topic.

        Applied to this node's store at once, so a reconnect here sees it even before the
        reader gets to it; the reader applies it again in log order.
        """
        self.store.put(client_id, value)
        topic = self.node.config.sessions_topic
        self.node.producer.submit(topic, client_id.encode(), value, [], then)

    def checkpoint(self) -> None:
        """Save every connected persistent session (called every second)."""
        for conn in list(self.node.clients.values()):
            s = self._sessions.get(conn)
            if s is not None and not s.clean and not conn.closed:
                self.save(conn)

    def expire(self, now_ms: int) -> int:
        """Delete (tombstone) the stored MQTT 5 sessions whose client has been gone longer
        than their Session Expiry Interval; how many. Every node does it for the sessions it
        sees, so some tombstones are written twice (harmless in a compacted topic). A client
        that reconnected on another node meanwhile gets its session record back at that
        node's next checkpoint (within a second)."""
        n = 0
        for client_id, state in self.store.expiring():
            if state.expired(now_ms) and client_id not in self.node.clients:
                self.write_session(client_id, None)
                SESSIONS_EXPIRED_TOTAL.inc()
                n += 1
        return n

    # takeover across nodes ---------------------------------------------------------------

    def _on_record(self, client_id: str, owner: str, clean_start: bool) -> None:
        local = self.node.clients.get(client_id)
        state = None if local is None else self._sessions.get(local)
        if local is None or state is None:
            return
        node_id, _, started = owner.rpartition("/")
        if owner == state.owner or not started.isdigit():
            return
        # The newer connection wins; equal start times are ordered by node id, the same way
        # on every node.
        if (int(started), node_id) > (local.connected_ms, self.node.config.node_id):
            log.info("client %s connected on node %s: closing it here", client_id, node_id)
            TAKEOVERS_TOTAL.inc()
            local.take_over(ends_session=clean_start)
