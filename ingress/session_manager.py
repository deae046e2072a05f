"""Sessions on a node: resume, replay from Kafka, checkpoint, takeover across nodes.

Every CONNECT writes an ownership record to ``bayou.sessions`` (owner = node and connection
start time). Every node reads that topic, so when a client id connects on another node, the
node holding the older connection closes it (session takeover across nodes). Persistent
sessions are checkpointed every second while connected and saved on disconnect; outbound
QoS 2 messages of a persistent session are sent only once the session record naming them is
in Kafka, so a resumed session resends them with the same packet id and never twice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ingress.contract import H_MQTT_QOS, H_MQTT_TOPIC
from ingress.delivery import Record
from ingress.metrics import (
    REPLAYED_TOTAL,
    SESSIONS_CREATED_TOTAL,
    SESSIONS_RESUMED_TOTAL,
    TAKEOVERS_TOTAL,
)
from ingress.replay import read_ranges
from ingress.routes import EgressRouter
from ingress.sessions import Pending, SessionState, SessionStore

if TYPE_CHECKING:
    from ingress.node import IngressNode
    from ingress.protocol import MQTTConnection

log = logging.getLogger(__name__)

_QOS = {b"0": 0, b"1": 1, b"2": 2}


def record_qos_topic(rec: Record, egress: EgressRouter) -> tuple[str | None, int]:
    """The MQTT topic and QoS of a delivery record: from its headers, else the egress rules."""
    topic = qos = None
    for k, v in rec.headers:
        if k == H_MQTT_TOPIC:
            topic = v.decode("utf-8", "replace")
        elif k == H_MQTT_QOS:
            qos = _QOS.get(v, 0)
    if topic is None:
        route = egress.route(rec.topic, rec.key)
        if route is None:
            return None, 0
        return route.mqtt_topic, route.qos if qos is None else qos
    return topic, qos or 0


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
                upto = dict(self.node.delivery.positions)
                conn.replaying = True
                conn.replay_cursor = dict(state.served)
                for key, end in upto.items():
                    conn.replay_cursor.setdefault(key, end)
                # Pending packet ids stay reserved (and saved) until their message is resent.
                for x in state.pending:
                    conn.inflight_out[x.packet_id] = (x.topic, x.partition, x.offset, x.qos,
                                                      x.released)  # fmt: skip
                self.node.spawn(self._replay(conn, state, upto))
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
                conn.abort("session save failed", count=False)
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

    def _on_record(self, client_id: str, raw: bytes) -> None:
        local = self.node.clients.get(client_id)
        if local is None or local.session is None:
            return
        try:
            owner = str(json.loads(raw).get("owner", ""))
        except ValueError:
            return
        node_id, _, started = owner.rpartition("/")
        if not owner or owner == local.session.owner or not started.isdigit():
            return
        if int(started) > local.connected_ms:
            # A newer connection of this client id elsewhere: it owns the session now.
            log.info("client %s connected on node %s: closing it here", client_id, node_id)
            TAKEOVERS_TOTAL.inc()
            local.taken_over = True
            local.close()

    # replay ------------------------------------------------------------------------------

    async def _replay(
        self, conn: MQTTConnection, state: SessionState, upto: dict[tuple[str, int], int]
    ) -> None:
        """Send what the session missed, from Kafka, then switch it to live delivery."""
        pending = {(x.topic, x.partition, x.offset): x for x in state.pending}
        ranges: dict[tuple[str, int], tuple[int, int]] = {}
        for key, end in upto.items():
            start = state.replay_start(key)
            if start is not None and start < end:
                ranges[key] = (start, end)
        sent = 0
        try:
            async for batch in read_ranges(
                self.node.config.kafka_bootstrap, ranges, f"replay-{self.node.config.node_id}"
            ):
                if conn.closed:
                    return
                conn.hold()
                qos2_before = conn.qos2_out_sent
                for rec in batch:
                    key = (rec.topic, rec.partition)
                    p = pending.pop((rec.topic, rec.partition, rec.offset), None)
                    if p is not None:
                        sent += self._resend(conn, rec, p)
                    elif rec.offset >= state.served.get(key, 0):
                        sent += self._send_if_subscribed(conn, rec)
                    conn.replay_cursor[key] = rec.offset + 1
                if conn.qos2_out_sent != qos2_before:
                    self.save_then_release(conn)
                else:
                    conn.release()
            for key, end in upto.items():
                conn.replay_cursor[key] = max(conn.replay_cursor.get(key, end), end)
        except Exception:
            log.exception("replay for %s failed; closing it so it retries", conn.client_id)
            conn.abort("replay failed", count=False)
            return
        REPLAYED_TOTAL.inc(sent)
        conn.replaying = False
        buffered, conn.live_buffer = conn.live_buffer, []
        self.node.deliver_to(conn, buffered)

    def _resend(self, conn: MQTTConnection, rec: Record, p: Pending) -> int:
        """Resend a message that was in flight: same packet id [MQTT-4.4.0-1]."""
        topic, _ = record_qos_topic(rec, self.node.egress)
        if topic is None:
            return 0
        conn.inflight_out[p.packet_id] = (rec.topic, rec.partition, rec.offset, p.qos, p.released)
        if p.qos == 2:
            conn.qos2_out_sent += 1
        if p.released:
            conn.write(bytes((0x62, 2)) + p.packet_id.to_bytes(2, "big"))  # PUBREL again
        else:
            conn.write_publish(topic, rec.value or b"", p.qos, p.packet_id, dup=True)
        return 1

    def _send_if_subscribed(self, conn: MQTTConnection, rec: Record) -> int:
        topic, msg_qos = record_qos_topic(rec, self.node.egress)
        if topic is None:
            return 0
        granted = conn.granted_qos(topic)
        if granted is None:
            return 0
        qos = min(msg_qos, granted)
        pid = 0
        if qos:
            pid = conn.next_packet_id()
            conn.inflight_out[pid] = (rec.topic, rec.partition, rec.offset, qos, False)
            if qos == 2:
                conn.qos2_out_sent += 1
        conn.write_publish(topic, rec.value or b"", qos, pid)
        return 1


def now_ms() -> int:
    """Wall clock in milliseconds (connection start times in owner tokens)."""
    return int(time.time() * 1000)
