"""Live delivery: records of the delivery topics to the matching subscribers, as they arrive.

The node's delivery :class:`~ingress.kafka.topic_reader.TopicReader` follows the route topics
and ``bayou.outbound`` from their end and hands each batch to :meth:`LiveDelivery.deliver`,
which looks up the subscribers of each record's MQTT topic and sends it through the one send
routine (:mod:`ingress.outbound.send`) at the lower of the record's and the subscription's QoS.
A connection catching up is skipped (catch-up serves it); one whose in-flight window is full
leaves live delivery for catch-up instead of queueing in memory, and so does one that does not
read (its transport holds more than ``max_write_buffer`` bytes), whose QoS 0 messages are dropped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from ingress.metrics import END_TO_END_LATENCY, LIMIT_REFUSALS_TOTAL, count_out
from ingress.outbound.catch_up import CatchUp
from ingress.outbound.send import Sender
from ingress.security.limits import WRITE_BUFFER
from ingress.state.subscriptions import SubscriptionTable
from ingress.wire.connection import MQTTConnection
from kafkaio.reader import TP, Record


class LiveDelivery:
    """Delivers each batch of delivery records to this node's subscribers."""

    def __init__(
        self,
        sender: Sender,
        subscriptions: SubscriptionTable[MQTTConnection],
        catch_up: CatchUp,
        positions: Mapping[TP, int],
    ) -> None:
        self.sender = sender
        self.subscriptions = subscriptions
        self.catch_up = catch_up
        # The delivery reader's positions (updated in place): where live delivery is.
        self.positions = positions
        self._dropped_counter = LIMIT_REFUSALS_TOTAL.labels(WRITE_BUFFER)

    def deliver(self, records: list[Record]) -> None:
        """Deliver Kafka records to the matching subscribers on this node."""
        now_ms = time.time() * 1000
        read, match = self.sender.read, self.subscriptions.match
        batch = self.sender.batch()
        dropped = 0
        for index, rec in enumerate(records):
            got = read(rec, match)
            if got is None:
                continue
            msg, targets = got
            topic, msg_qos, _, ts_b, from_client, _ = msg
            for conn, sub_qos in targets:
                out = conn.outbound
                if out.catching_up:
                    continue  # catch-up serves it (ingress/outbound/catch_up.py): not live yet
                if (
                    conn.fresh
                    and from_client  # a client's publish, stamped by the node
                    and ts_b is not None
                    and conn.published_before_subscribing(topic, int(ts_b))
                ):
                    continue
                qos = msg_qos if msg_qos < sub_qos else sub_qos
                if out.blocked:
                    # It does not read: more than max_write_buffer bytes wait for it. QoS 0
                    # may be dropped; QoS 1/2 wait in Kafka (catch-up once it drains).
                    if qos:
                        self.catch_up.start(conn, self._cursor_at(records, index), [])
                    else:
                        dropped += 1
                    continue
                if qos and len(out.inflight) >= out.max_inflight:
                    # Its in-flight window is full: it leaves live delivery and catches up
                    # from Kafka once it acknowledges, instead of queueing in memory.
                    self.catch_up.start(conn, self._cursor_at(records, index), [])
                    continue
                batch.send(conn, rec, msg, qos)
            batch.added(len(msg[2]))
            if ts_b:
                END_TO_END_LATENCY.observe(max(0.0, (now_ms - int(ts_b)) / 1000))
        batch.flush()
        if dropped:
            self._dropped_counter.inc(dropped)
        count_out(batch.sent)

    def _cursor_at(self, records: list[Record], index: int) -> dict[TP, int]:
        """Per partition, the first offset not yet handled when delivery stops at ``index``."""
        cursor = dict(self.positions)
        for rec in records[index:]:
            key = (rec.topic, rec.partition)
            if rec.offset < cursor.get(key, rec.offset + 1):
                cursor[key] = rec.offset
        return cursor
