"""Sessions on a node: resume, replay from Kafka, checkpoint, takeover across nodes.

Every CONNECT writes an ownership record to ``bayou.sessions`` (owner = node and connection
start time). Every node reads that topic, so when a client id connects on another node, the
node holding the older connection closes it (session takeover across nodes). Persistent
sessions are checkpointed every second while connected and saved on disconnect; outbound
QoS 2 messages of a persistent session are sent only once the session record naming them is
in Kafka, so a resumed session resends them with the same packet id and never twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ingress.metrics import (
    SESSIONS_CREATED_TOTAL,
    SESSIONS_RESUMED_TOTAL,
    TAKEOVERS_TOTAL,
)
from ingress.outbound.catch_up import start_catch_up
from ingress.state.sessions import Pending, SessionState, SessionStore

if TYPE_CHECKING:
    from ingress.node import IngressNode
    from ingress.wire.connection import MQTTConnection

log = logging.getLogger(__name__)


class SessionManager:
    """The session side of an :class:`IngressNode`."""

    def __init__(self, node: IngressNode) -> None:
        self.node = node
        self.store = SessionStore()
        self.store.owner_listeners.append(self._on_record)

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
        # [MQTT-3.2.2-1]: always 0 for a clean session.
        present = not clean and stored is not None and not stored.clean
        if clean:
            # [MQTT-3.1.2-6]: a clean session discards any previous one; the record written
            # here only claims the client id for takeover across nodes.
            state = SessionState(conn.client_id, clean=True)
        elif present:
            assert stored is not None
            state = stored
            SESSIONS_RESUMED_TOTAL.inc()
        else:
            state = SessionState(conn.client_id, served=dict(self.node.delivery.positions))
            SESSIONS_CREATED_TOTAL.inc()
        state.owner = self.owner_of(conn)
        conn.session = state
        if not clean:
            conn.qos2_in = dict.fromkeys(state.qos2_in, True)
            for filt, qos in state.subscriptions.items():
                conn.filters[filt] = qos
                self.node.subscriptions.subscribe(conn, filt, qos)
            if present:
                start_catch_up(self.node, conn, state.served, state.pending)
        self.save(conn)
        return present

    def disconnected(self, conn: MQTTConnection) -> None:
        """Save (persistent) or drop (clean) the session of a closed connection."""
        if conn.session is None or conn.taken_over:
            return
        if conn.session.clean:
            self.node.write_session(conn.session.client_id, None)
            return
        self.save(conn, owner="")

    def snapshot(self, conn: MQTTConnection) -> SessionState:
        """A copy of the connection's session as it stands now."""
        base = conn.session
        assert base is not None
        if base.clean:
            return SessionState(base.client_id, owner=base.owner, clean=True)
        return SessionState(
            client_id=base.client_id,
            subscriptions=dict(conn.filters),
            served=dict(conn.replay_cursor if conn.replaying else self.node.delivery.positions),
            pending=[
                Pending(t, p, o, pid, q, released)
                for pid, (t, p, o, q, released) in conn.inflight_out.items()
                if t is not None
            ],
            qos2_in=[pid for pid, sent in conn.qos2_in.items() if sent],
            owner=base.owner,
        )

    def save(
        self,
        conn: MQTTConnection,
        owner: str | None = None,
        then: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        """Write the connection's session record; ``then`` runs once Kafka has it (or not)."""
        state = self.snapshot(conn)
        if owner is not None:
            state.owner = owner
        self.node.write_session(state.client_id, state.to_bytes(), then)

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

    def checkpoint(self) -> None:
        """Save every connected persistent session (called every second)."""
        for conn in list(self.node.clients.values()):
            s = conn.session
            if s is not None and not s.clean and not conn.closed:
                self.save(conn)

    # takeover across nodes ---------------------------------------------------------------

    def _on_record(self, client_id: str, owner: str) -> None:
        local = self.node.clients.get(client_id)
        if local is None or local.session is None:
            return
        node_id, _, started = owner.rpartition("/")
        if owner == local.session.owner or not started.isdigit():
            return
        # The newer connection wins; equal start times are ordered by node id, the same way
        # on every node.
        if (int(started), node_id) > (local.connected_ms, self.node.config.node_id):
            log.info("client %s connected on node %s: closing it here", client_id, node_id)
            TAKEOVERS_TOTAL.inc()
            local.taken_over = True
            local.close()


def now_ms() -> int:
    """Wall clock in milliseconds (connection start times in owner tokens)."""
    return int(time.time() * 1000)
