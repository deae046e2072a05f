"""Bringing a connection up to date from Kafka instead of from a queue in broker memory.

Used when a persistent session resumes (it missed what was published while it was away)
and when a client falls behind live delivery (its in-flight window is full): in both cases
the connection leaves live delivery and is brought from where it was served up to where the
node is, pass after pass, and rejoins live delivery once a pass finds nothing new. Nothing is
buffered per client, so a slow or absent client costs no memory.

One reader per node serves every connection catching up: a pass reads each partition once,
from the oldest position any of them needs, and hands each record to the connections that
need it (1,000 sessions reconnecting at once read the backlog once, not 1,000 times). A
connection whose in-flight window fills stops for the rest of the pass and goes on from there
in the next one, so one slow client does not hold the others back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ingress.contract import H_MQTT_QOS, H_MQTT_TOPIC
from ingress.kafka.ranges import read_ranges
from ingress.metrics import CATCH_UPS_TOTAL, REPLAYED_TOTAL
from ingress.routing.rules import EgressRouter
from ingress.state.sessions import Pending
from ingress.wire import codec
from kafkaio.reader import Record

if TYPE_CHECKING:
    from ingress.node import IngressNode
    from ingress.wire.connection import MQTTConnection

log = logging.getLogger(__name__)

PartitionKey = tuple[str, int]
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


def start_catch_up(
    node: IngressNode,
    conn: MQTTConnection,
    served: dict[PartitionKey, int],
    pending: list[Pending],
) -> None:
    """Take ``conn`` off live delivery and bring it up to date from Kafka.

    ``served``: per partition, the offset before which every record was handled for this
    connection. ``pending``: messages sent before and not completed, resent with their
    packet ids (they may lie before ``served``).
    """
    if conn.replaying:
        return
    conn.replaying = True
    cursor = dict(served)
    for key, end in node.delivery.positions.items():
        cursor.setdefault(key, end)
    conn.replay_cursor = cursor
    # Pending packet ids stay reserved (and in saved sessions) until they are resent.
    for x in pending:
        conn.inflight_out[x.packet_id] = (x.topic, x.partition, x.offset, x.qos, x.released)
    CATCH_UPS_TOTAL.inc()
    node.catch_up.add(conn, pending)


class CatchUp:
    """The node's one catch-up reader and the connections it is bringing up to date."""

    def __init__(self, node: IngressNode) -> None:
        self.node = node
        self.pending: dict[MQTTConnection, dict[tuple[str, int, int], Pending]] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def add(self, conn: MQTTConnection, pending: list[Pending]) -> None:
        """Start bringing ``conn`` up to date (it is already off live delivery)."""
        self.pending[conn] = {(x.topic, x.partition, x.offset): x for x in pending}
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="bayou-catch-up")
            self.node.track(self._task)

    def wake(self) -> None:
        """A waiting connection's window opened: run another pass soon."""
        self._wake.set()

    async def _run(self) -> None:
        sent = 0
        try:
            while self.pending:
                for conn in [c for c in self.pending if c.closed]:
                    del self.pending[conn]
                active = [c for c in self.pending if len(c.inflight_out) < c.max_inflight]
                upto = dict(self.node.delivery.positions)
                behind = []
                for conn in active:
                    if any(self._start(conn, k) < end for k, end in upto.items()):
                        behind.append(conn)
                    else:
                        # Up to date, and nothing can arrive before this returns: live again.
                        conn.replaying = False
                        del self.pending[conn]
                if not behind:
                    if self.pending:  # only connections waiting for acknowledgements
                        self._wake.clear()
                        await self._wake.wait()
                    continue
                sent += await self._pass(behind, self._ranges(behind, upto), upto)
        except Exception:
            log.exception("catch-up reader failed; closing the connections it served")
            for conn in list(self.pending):
                conn.abort("catch-up failed", None)
            self.pending.clear()
        finally:
            REPLAYED_TOTAL.inc(sent)

    def _start(self, conn: MQTTConnection, key: PartitionKey) -> int:
        start = conn.replay_cursor.get(key, 0)
        offsets = [o for (t, p, o) in self.pending[conn] if (t, p) == key]
        return min([start, *offsets])

    def _ranges(
        self, conns: list[MQTTConnection], upto: dict[PartitionKey, int]
    ) -> dict[PartitionKey, tuple[int, int]]:
        ranges: dict[PartitionKey, tuple[int, int]] = {}
        for conn in conns:
            for key, end in upto.items():
                start = self._start(conn, key)
                if start < end:
                    old = ranges.get(key)
                    ranges[key] = (min(start, old[0]) if old else start, end)
        return ranges

    async def _pass(
        self,
        conns: list[MQTTConnection],
        ranges: dict[PartitionKey, tuple[int, int]],
        upto: dict[PartitionKey, int],
    ) -> int:
        sent = 0
        stalled: set[MQTTConnection] = set()
        progress: dict[PartitionKey, int] = {}
        matches: dict[str, list[tuple[MQTTConnection, int]]] = {}
        name = f"catch-up-{self.node.config.node_id}"
        resends: dict[tuple[str, int, int], list[MQTTConnection]] = {}
        for conn in conns:
            for where in self.pending[conn]:
                resends.setdefault(where, []).append(conn)
        async for batch in read_ranges(self.node.config.kafka_bootstrap, ranges, name):
            live = [c for c in conns if c not in stalled and not c.closed and c in self.pending]
            qos2_before = {c: c.qos2_out_sent for c in live}
            for c in live:
                c.hold()
            for rec in batch:
                key = (rec.topic, rec.partition)
                where = (rec.topic, rec.partition, rec.offset)
                for conn in resends.get(where, ()):
                    p = self.pending[conn].pop(where, None)
                    if p is not None and conn not in stalled and not conn.closed:
                        sent += _resend(self.node, conn, rec, p)
                for conn, granted in self._matching(rec, live, matches):
                    if conn in stalled or rec.offset < conn.replay_cursor.get(key, 0):
                        continue
                    if len(conn.inflight_out) >= conn.max_inflight:
                        # Window full: it goes on from here in a later pass.
                        stalled.add(conn)
                        cur = conn.replay_cursor
                        for k, done in progress.items():
                            cur[k] = max(cur.get(k, done), done)
                        cur[key] = rec.offset
                        continue
                    sent += _send(conn, rec, granted)
                progress[key] = rec.offset + 1
            for c in live:
                _flush(self.node, c, qos2_before[c])
        for conn in conns:
            if conn not in stalled:
                cur = conn.replay_cursor
                for key, end in upto.items():
                    cur[key] = max(cur.get(key, end), end)
        return sent

    def _matching(
        self,
        rec: Record,
        conns: list[MQTTConnection],
        cache: dict[str, list[tuple[MQTTConnection, int]]],
    ) -> list[tuple[MQTTConnection, int]]:
        topic, _ = record_qos_topic(rec, self.node.egress)
        if topic is None:
            return []
        hit = cache.get(topic)
        if hit is None:
            hit = []
            for conn in conns:
                granted = conn.granted_qos(topic)
                if granted is not None:
                    hit.append((conn, granted))
            cache[topic] = hit
        return hit


def _flush(node: IngressNode, conn: MQTTConnection, qos2_before: int) -> None:
    # Outbound QoS 2 goes out only once the session naming it is in Kafka.
    if conn.qos2_out_sent != qos2_before and conn.session is not None and not conn.session.clean:
        node.sessions.save_then_release(conn)
    else:
        conn.release()


def _resend(node: IngressNode, conn: MQTTConnection, rec: Record, p: Pending) -> int:
    """Resend a message that was in flight: same packet id, DUP set [MQTT-4.4.0-1]."""
    topic, _ = record_qos_topic(rec, node.egress)
    if topic is None:
        return 0
    conn.inflight_out[p.packet_id] = (rec.topic, rec.partition, rec.offset, p.qos, p.released)
    if p.qos == 2:
        conn.qos2_out_sent += 1
    if p.released:
        conn.write(codec.encode_ack(codec.PUBREL, p.packet_id))
    else:
        conn.write_publish(topic, rec.value or b"", p.qos, p.packet_id, dup=True)
    return 1


def _send(conn: MQTTConnection, rec: Record, granted: int) -> int:
    if conn.node.dedup.is_duplicate(rec.headers, (rec.topic, rec.partition, rec.offset)):
        return 0
    topic, msg_qos = record_qos_topic(rec, conn.node.egress)
    if topic is None:
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
