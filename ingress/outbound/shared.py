"""Shared subscriptions (MQTT 5 §4.8.2, and for 3.1.1 clients as mosquitto allows): each
message of ``$share/{group}/{filter}`` goes to one member of the group, on whichever node.

Between nodes, Kafka balances: each node with members runs a consumer-group member
(:class:`~ingress.kafka.share_reader.ShareReader`), and each partition of the delivery topics
belongs to one node at a time. Within a node, :class:`ShareGroup` sends each record to the next
member with room in its window, in turn. A record counts as done once the member acknowledged
it (PUBACK; PUBREC for QoS 2); the group commits, per partition, the lowest offset not done.

A member that goes away: its QoS 1 messages in flight go to another member at once (here), or
from the committed offset on the node that takes the partition over (another node, when the
last member here went). Its QoS 2 messages in flight stay its own: completed when it resumes
its session and never sent to another member [MQTT-4.8.2-4, -5]. A PUBACK with an error code
ends the message too [MQTT-4.8.2-6]. Retained messages are not sent to shared subscriptions.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping

from ingress.config import IngressConfig
from ingress.contract.topics import matches, shared_filter
from ingress.kafka.share_reader import ShareReader, group_id
from ingress.metrics import (
    END_TO_END_LATENCY,
    SHARED_GROUPS,
    SHARED_PARTITIONS,
    SHARED_REDELIVERED_TOTAL,
    count_out,
)
from ingress.outbound.send import Message, Sender
from ingress.wire.connection import MQTTConnection
from ingress.wire.outbound_state import Where
from kafkaio.reader import TP, Record

# Records held for members beyond which the group stops fetching, and where it starts again:
# a group whose members do not keep up waits in Kafka, not in memory.
_PAUSE_AT = 5_000
_RESUME_AT = 500


class ShareGroup:
    """One shared subscription on this node: its members, and the records of the partitions
    Kafka gave this node, from fetched to done."""

    def __init__(self, filt: str, topic_filter: str, sender: Sender) -> None:
        self.filter = filt  # "$share/{group}/{filter}", the members' subscription
        self.topic_filter = topic_filter
        self.sender = sender
        self.reader: ShareReader | None = None
        self.members: dict[MQTTConnection, int] = {}  # member → granted QoS, in join order
        self._turn = 0
        self._targets: list[tuple[MQTTConnection, int]] = []
        self._matches: dict[str, bool] = {}
        self._assigned: set[TP] = set()
        # Per partition: the next offset to handle, and the offsets fetched but not done.
        self._next: dict[TP, int] = {}
        self._open: dict[TP, set[int]] = {}
        self._held: dict[Where, tuple[Record, Message]] = {}
        self._backlog: deque[Where] = deque()
        self._drain_soon = False
        self.committable: Mapping[TP, int] = {}

    # members ------------------------------------------------------------------------------

    def join(self, conn: MQTTConnection, qos: int) -> None:
        """``conn`` subscribed (again: its QoS changes)."""
        self.members[conn] = qos
        self._targets = list(self.members.items())
        self._schedule_drain()

    def leave(self, conn: MQTTConnection) -> None:
        """``conn`` unsubscribed or its connection ended (what was in flight to it: see
        :meth:`lost`)."""
        self.members.pop(conn, None)
        self._targets = list(self.members.items())

    def lost(self, where: Where, qos: int) -> None:
        """The member ``where`` was in flight to went away: a QoS 1 message goes to another
        member; a QoS 2 one stays with the member's session (or ends with it)."""
        if qos != 1 or where not in self._held:
            self.acked(where)
            return
        SHARED_REDELIVERED_TOTAL.inc()
        self._backlog.appendleft(where)
        self._schedule_drain()

    # the Kafka side (ShareHandler) ----------------------------------------------------------

    def assigned(self, starts: dict[TP, int]) -> None:
        for key, offset in starts.items():
            self._assigned.add(key)
            if offset >= 0:
                self._next[key] = offset
            else:
                self._next.pop(key, None)  # from the end: the first record says where

    def records(self, records: list[Record]) -> None:
        if not self.members:
            # The last member left and the group is closing here: these records are not
            # handled, so the commit stays before them for whoever serves the group next.
            return
        read, match = self.sender.read, self._match
        for rec in records:
            key = (rec.topic, rec.partition)
            if key not in self._assigned:
                continue  # revoked since it was fetched
            nxt = self._next.get(key)
            if nxt is not None and rec.offset < nxt:
                continue
            self._next[key] = rec.offset + 1
            got = read(rec, match)
            if got is None:
                continue  # not for this filter, expired, a duplicate result, no reader allowed
            where = (rec.topic, rec.partition, rec.offset)
            self._open.setdefault(key, set()).add(rec.offset)
            self._held[where] = (rec, got[0])
            self._backlog.append(where)
        self._drain()

    def revoked(self, partitions: list[TP]) -> dict[TP, int]:
        offsets = self._committable(partitions)
        gone = set(partitions)
        self._assigned -= gone
        for key in gone:
            self._open.pop(key, None)
            self._next.pop(key, None)
        self._held = {w: h for w, h in self._held.items() if w[:2] not in gone}
        self._backlog = deque(w for w in self._backlog if w[:2] not in gone)
        self._pause()
        return offsets

    def acked(self, where: Where) -> None:
        """The member acknowledged the message (or it is done otherwise)."""
        if self._held.pop(where, None) is None:
            return  # its partition was revoked meanwhile: the next owner decides
        open_ = self._open.get(where[:2])
        if open_ is not None:
            open_.discard(where[2])
        self._schedule_drain()

    @property
    def partitions(self) -> int:
        """How many partitions Kafka gave this node for the group."""
        return len(self._assigned)

    def tick(self) -> None:
        """Publish what the thread may commit (every 200 ms), and send what waits."""
        self.committable = self._committable(list(self._assigned))
        if self._backlog:
            self._drain()

    # sending ------------------------------------------------------------------------------

    def _match(self, topic: str) -> list[tuple[MQTTConnection, int]]:
        hit = self._matches.get(topic)
        if hit is None:
            if len(self._matches) > 10_000:
                self._matches.clear()
            hit = self._matches[topic] = matches(self.topic_filter, topic)
        return self._targets if hit else []

    def _schedule_drain(self) -> None:
        # Acknowledgements arrive one by one: one drain per loop turn, not one per PUBACK.
        if not self._drain_soon and self._backlog:
            self._drain_soon = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        self._drain_soon = False
        backlog, held = self._backlog, self._held
        if not backlog:
            return
        batch = self.sender.batch()
        now_ms = time.time() * 1000
        while backlog:
            where = backlog[0]
            entry = held.get(where)
            if entry is None:
                backlog.popleft()
                continue
            rec, msg = entry
            qos = msg[1]
            member = self._pick(msg[0], qos)
            if member is None:
                break  # every member's window is full: the next acknowledgement goes on
            conn, granted = member
            backlog.popleft()
            qos = min(qos, granted)
            pid = batch.send_shared(conn, rec, msg, qos, self.filter)
            if pid:
                conn.outbound.shared[pid] = (self, where, qos)
            else:
                self.acked(where)  # QoS 0, or too large for the member: done
            batch.added(len(msg[2]))
            ts_b = msg[3]
            if ts_b:  # as live delivery: publish reaching Bayou → written to the member
                END_TO_END_LATENCY.observe(max(0.0, (now_ms - int(ts_b)) / 1000))
        batch.flush()
        count_out(batch.sent)
        self._pause()

    def _pick(self, topic: str, qos: int) -> tuple[MQTTConnection, int] | None:
        """The next member, in turn, that may receive ``topic`` and has room for it."""
        targets = self._targets
        n = len(targets)
        for i in range(n):
            conn, granted = targets[(self._turn + i) % n]
            out = conn.outbound
            if conn.closed or out.blocked:
                continue
            if qos and granted and len(out.inflight) >= out.max_inflight:
                continue
            if conn.acl is not None and not conn.acl.receive(topic):
                continue
            self._turn = (self._turn + i + 1) % n
            return conn, granted
        return None

    def _committable(self, partitions: list[TP]) -> dict[TP, int]:
        out: dict[TP, int] = {}
        for key in partitions:
            open_ = self._open.get(key)
            if open_:
                out[key] = min(open_)
            elif key in self._next:
                out[key] = self._next[key]
        return out

    def _pause(self) -> None:
        if self.reader is None:
            return
        held = len(self._held)
        if held >= _PAUSE_AT:
            self.reader.paused = True
        elif held <= _RESUME_AT:
            self.reader.paused = False


class SharedSubscriptions:
    """The node's shared subscriptions: one :class:`ShareGroup` per ``$share/...`` filter
    with members here."""

    def __init__(
        self,
        config: IngressConfig,
        sender: Sender,
        topics: list[str],
        positions: Mapping[TP, int],
    ) -> None:
        self.config = config
        self.sender = sender
        self.topics = topics
        self.positions = positions
        self.groups: dict[str, ShareGroup] = {}
        # Groups whose last member here left, leaving their Kafka group, by filter.
        self._stopping: dict[str, asyncio.Task[None]] = {}

    def join(self, conn: MQTTConnection, filt: str, qos: int) -> None:
        """``conn`` subscribed to the shared subscription ``filt`` (already validated)."""
        group = self.groups.get(filt)
        if group is None:
            parsed = shared_filter(filt)
            assert parsed is not None
            name, topic_filter = parsed
            group = self.groups[filt] = ShareGroup(filt, topic_filter, self.sender)
            group.reader = ShareReader(
                self.config.kafka_bootstrap,
                group_id(name, topic_filter),
                self.topics,
                group,
                starts=self.positions,
                session_timeout_ms=self.config.share_session_timeout_ms,
                fetch_wait_ms=self.config.fetch_wait_ms,
                security=self.config.kafka_security,
            )
            leaving = self._stopping.get(filt)
            if leaving is None:
                group.reader.start()
            else:
                # The consumer that left a moment ago must be out of the group before this one
                # joins: the embedded broker never completes a rebalance whose leader left
                # during it (measured; Apache Kafka does).
                leaving.add_done_callback(group.reader.start_after)
            SHARED_GROUPS.set(len(self.groups))
        group.join(conn, qos)

    def leave(self, conn: MQTTConnection, filt: str) -> None:
        """``conn`` is no longer a member of ``filt``; the last member closes the group here."""
        group = self.groups.get(filt)
        if group is None:
            return
        group.leave(conn)
        if not group.members:
            del self.groups[filt]
            SHARED_GROUPS.set(len(self.groups))
            if group.reader is not None:
                self._stop_reader(filt, group.reader)

    def forget(self, conn: MQTTConnection) -> None:
        """``conn``'s connection ended: it leaves every shared subscription it had, and its
        messages in flight go back to their groups (before a last member's group closes)."""
        filters = [f for f in conn.filters if f in self.groups]
        for filt in filters:
            self.groups[filt].leave(conn)
        conn.outbound.connection_lost()
        for filt in filters:
            self.leave(conn, filt)

    def tick(self) -> None:
        """Every 200 ms (the node's sweep)."""
        served = 0
        for group in self.groups.values():
            group.tick()
            served += group.partitions
        SHARED_PARTITIONS.set(served)

    def _stop_reader(self, filt: str, reader: ShareReader) -> None:
        before = self._stopping.get(filt)

        async def stop() -> None:
            if before is not None:
                await asyncio.gather(before, return_exceptions=True)  # started after it
            await reader.stop()

        task = asyncio.get_running_loop().create_task(stop())
        self._stopping[filt] = task
        task.add_done_callback(lambda t: self._stopping.pop(filt, None) if
                               self._stopping.get(filt) is t else None)  # fmt: skip

    async def stop(self) -> None:
        """Leave every group (their last commits included)."""
        for filt in list(self.groups):
            group = self.groups.pop(filt)
            if group.reader is not None:
                self._stop_reader(filt, group.reader)
        SHARED_GROUPS.set(0)
        SHARED_PARTITIONS.set(0)
        if self._stopping:
            await asyncio.gather(*self._stopping.values(), return_exceptions=True)
