"""Bringing a connection up to date from Kafka instead of from a queue in broker memory.

Used when a persistent session resumes (it missed what was published while it was away)
and when a client falls behind live delivery (its in-flight window is full): in both cases
the connection leaves live delivery, reads the delivery partitions from where it was served
up to where the node is, passes after pass, and rejoins live delivery once a pass finds
nothing new. Nothing is buffered per client, so a slow or absent client costs no memory.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ingress import codec
from ingress.contract import H_MQTT_QOS, H_MQTT_TOPIC
from ingress.delivery import Record
from ingress.metrics import CATCH_UPS_TOTAL, REPLAYED_TOTAL
from ingress.replay import read_ranges
from ingress.routes import EgressRouter
from ingress.sessions import Pending

if TYPE_CHECKING:
    from ingress.node import IngressNode
    from ingress.protocol import MQTTConnection

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
    """Take ``conn`` off live delivery and bring it up to date from Kafka, in a task.

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
    node.spawn(_catch_up(node, conn, pending))


async def _catch_up(node: IngressNode, conn: MQTTConnection, pending: list[Pending]) -> None:
    by_offset = {(x.topic, x.partition, x.offset): x for x in pending}
    sent = 0
    try:
        first = True
        while not conn.closed:
            upto = dict(node.delivery.positions)
            cursor = conn.replay_cursor
            ranges: dict[PartitionKey, tuple[int, int]] = {}
            for key, end in upto.items():
                start = cursor.get(key, end)
                if first:
                    start = min([start, *(o for (t, p, o) in by_offset if (t, p) == key)])
                if start < end:
                    ranges[key] = (start, end)
            first = False
            if not ranges:
                # Up to date, and nothing can arrive before this returns: rejoin live delivery.
                conn.replaying = False
                break
            sent += await _pass(node, conn, ranges, by_offset)
            for key, end in upto.items():
                cursor[key] = max(cursor.get(key, end), end)
    except Exception:
        log.exception("catch-up of %s failed; closing it so it reconnects", conn.client_id)
        conn.abort("catch-up failed", None)
    finally:
        REPLAYED_TOTAL.inc(sent)


async def _pass(
    node: IngressNode,
    conn: MQTTConnection,
    ranges: dict[PartitionKey, tuple[int, int]],
    pending: dict[tuple[str, int, int], Pending],
) -> int:
    sent = 0
    name = f"replay-{node.config.node_id}"
    async for batch in read_ranges(node.config.kafka_bootstrap, ranges, name):
        conn.hold()
        qos2_before = conn.qos2_out_sent
        try:
            for rec in batch:
                if conn.closed:
                    return sent
                key = (rec.topic, rec.partition)
                p = pending.pop((rec.topic, rec.partition, rec.offset), None)
                if p is not None:
                    sent += _resend(node, conn, rec, p)
                elif rec.offset >= conn.replay_cursor.get(key, 0):
                    if len(conn.inflight_out) >= conn.max_inflight:
                        # Let the client have what it was sent, then wait for its acks.
                        _flush(node, conn, qos2_before)
                        await conn.window_open()
                        conn.hold()
                        qos2_before = conn.qos2_out_sent
                    sent += _send_if_subscribed(node, conn, rec)
                conn.replay_cursor[key] = max(conn.replay_cursor.get(key, 0), rec.offset + 1)
        finally:
            _flush(node, conn, qos2_before)
    return sent


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


def _send_if_subscribed(node: IngressNode, conn: MQTTConnection, rec: Record) -> int:
    if node.dedup.is_duplicate(rec.headers, (rec.topic, rec.partition, rec.offset)):
        return 0
    topic, msg_qos = record_qos_topic(rec, node.egress)
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
