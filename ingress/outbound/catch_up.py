"""Catch-up: bringing a connection up to date from Kafka instead of from a queue in memory.

Used when a persistent session resumes (it missed what was published while it was away)
and when a client falls behind live delivery (its in-flight window is full): in both cases
the connection leaves live delivery and is brought from where it was served up to where the
node is, pass after pass, and rejoins live delivery once a pass finds nothing new. Nothing is
buffered per client, so a slow or absent client costs no memory.

One reader per node serves every connection catching up: a pass reads each partition once
(:func:`ingress.kafka.ranges.read_ranges`), from the oldest position any of them needs, and
hands each record to the connections that need it through the one send routine
(:mod:`ingress.outbound.send`); 1,000 sessions reconnecting at once read the backlog once, not
1,000 times. A connection whose in-flight window fills stops for the rest of the pass and goes
on from there in the next one, so one slow client does not hold the others back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from ingress.config import IngressConfig
from ingress.contract.topics import matches
from ingress.kafka.ranges import read_ranges
from ingress.metrics import CATCH_UP_SENT_TOTAL, CATCH_UPS_TOTAL, count_out
from ingress.outbound.send import Sender
from ingress.state.sessions import Pending
from ingress.state.subscriptions import SubscriptionTable
from ingress.wire.connection import MQTTConnection
from kafkaio.reader import TP

log = logging.getLogger(__name__)

Where = tuple[str, int, int]


@dataclass(frozen=True, slots=True)
class Replay:
    """History a subscription asked for (MQTT 5 ``replay-since``): before ``boundary`` (the
    node's positions when it subscribed) only records of ``filters`` published at or after
    ``since_ms`` go to the connection; from ``boundary`` on, catch-up as usual."""

    filters: tuple[str, ...]
    boundary: dict[TP, int]
    since_ms: int

    def skips(self, key: TP, offset: int, topic: str, timestamp_ms: int) -> bool:
        """The record is history this replay does not send (another subscription's, or older
        than asked: the embedded broker answers a time lookup with the log start)."""
        if offset >= self.boundary.get(key, 0):
            return False
        return timestamp_ms < self.since_ms or not any(matches(f, topic) for f in self.filters)


class CatchUpNode(Protocol):
    """What catch-up needs of its node (:class:`ingress.node.IngressNode` provides it)."""

    @property
    def config(self) -> IngressConfig: ...

    @property
    def positions(self) -> Mapping[TP, int]:
        """Per delivery partition, the next offset live delivery hands over."""

    @property
    def sender(self) -> Sender: ...

    @property
    def subscriptions(self) -> SubscriptionTable[MQTTConnection]: ...

    def track(self, task: asyncio.Task[None]) -> None:
        """Cancel ``task`` when the node stops."""


class CatchUp:
    """The node's one catch-up reader and the connections it is bringing up to date."""

    def __init__(self, node: CatchUpNode) -> None:
        self.node = node
        self.pending: dict[MQTTConnection, dict[Where, Pending]] = {}
        self.replays: dict[MQTTConnection, Replay] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(
        self,
        conn: MQTTConnection,
        served: Mapping[TP, int],
        pending: list[Pending],
        replay: Replay | None = None,
    ) -> bool:
        """Take ``conn`` off live delivery and bring it up to date from Kafka; False if it
        was catching up already.

        ``served``: per partition, the offset before which every record was handled for this
        connection. ``pending``: messages sent before and not completed, resent with their
        packet ids (they may lie before ``served``). ``replay``: ``served`` goes back to the
        history a subscription asked for, and records before its boundary are its only.
        """
        entries = [
            (x.topic, x.partition, x.offset, x.packet_id, x.qos, x.released) for x in pending
        ]
        if not conn.outbound.start_catch_up(served, self.node.positions, entries):
            return False
        if replay is not None:
            self.replays[conn] = replay
            # Its session record never goes back before the boundary: a resume after a
            # crash mid-replay must not send the other subscriptions' records again.
            conn.outbound.floor = dict(replay.boundary)
        CATCH_UPS_TOTAL.inc()
        self.pending[conn] = {(x.topic, x.partition, x.offset): x for x in pending}
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="bayou-catch-up")
            self.node.track(self._task)
        return True

    def wake(self) -> None:
        """A waiting connection's window opened: run another pass soon."""
        self._wake.set()

    async def _run(self) -> None:
        sent = 0
        try:
            while self.pending:
                for conn in [c for c in self.pending if c.closed]:
                    del self.pending[conn]
                    self.replays.pop(conn, None)
                # Room for a new message, or for one of its resends (not_full implies room).
                active = [c for c in self.pending if c.outbound.room_to_resend]
                upto = dict(self.node.positions)
                behind = []
                for conn in active:
                    if any(self._start(conn, k) < end for k, end in upto.items()):
                        behind.append(conn)
                    else:
                        # Up to date, and nothing can arrive before this returns: live again.
                        conn.outbound.rejoin_live()
                        del self.pending[conn]
                        self.replays.pop(conn, None)
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
            self.replays.clear()
        finally:
            CATCH_UP_SENT_TOTAL.inc(sent)

    def _start(self, conn: MQTTConnection, key: TP) -> int:
        start = conn.outbound.cursor.get(key, 0)
        offsets = [o for (t, p, o) in self.pending[conn] if (t, p) == key]
        return min([start, *offsets])

    def _ranges(
        self, conns: list[MQTTConnection], upto: dict[TP, int]
    ) -> dict[TP, tuple[int, int]]:
        ranges: dict[TP, tuple[int, int]] = {}
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
        ranges: dict[TP, tuple[int, int]],
        upto: dict[TP, int],
    ) -> int:
        sent = 0
        stalled: set[MQTTConnection] = set()
        progress: dict[TP, int] = {}
        # Per MQTT topic, the connections of this pass subscribed to it: the node's one
        # subscription table, narrowed to them.
        targets: dict[str, list[tuple[MQTTConnection, int]]] = {}
        live: set[MQTTConnection] = set()
        node_match = self.node.subscriptions.match

        def match(topic: str) -> list[tuple[MQTTConnection, int]]:
            hit = targets.get(topic)
            if hit is None:
                hit = targets[topic] = [(c, q) for c, q in node_match(topic) if c in live]
            return hit

        name = f"catch-up-{self.node.config.node_id}"
        resends: dict[Where, list[MQTTConnection]] = {}
        for conn in conns:
            for where in self.pending[conn]:
                resends.setdefault(where, []).append(conn)
        sender = self.node.sender
        config = self.node.config
        replays = self.replays
        async for records in read_ranges(
            config.kafka_bootstrap, ranges, name, security=config.kafka_security
        ):
            live = {c for c in conns if c not in stalled and not c.closed and c in self.pending}
            batch = sender.batch()
            for rec in records:
                key = (rec.topic, rec.partition)
                where = (rec.topic, rec.partition, rec.offset)
                waiting = resends.get(where)
                if waiting:
                    topic = sender.topic_of(rec)
                    for conn in waiting:
                        if conn not in live or conn in stalled:
                            continue  # its resend waits for a later pass
                        out = conn.outbound
                        p = self.pending[conn].get(where)
                        if p is None:
                            continue
                        if p.packet_id not in out.reserved:
                            del self.pending[conn][where]  # acknowledged before its resend
                        elif topic is None:
                            # No MQTT topic any more (its route rule is gone): dropped, and
                            # its packet id freed.
                            del self.pending[conn][where]
                            out.complete(p.packet_id)
                        elif not out.room_to_resend:
                            # The client's Receive Maximum: no more on the wire than it
                            # allows, resends included [MQTT-4.9.0-2]; the rest go on in a
                            # later pass, from this offset.
                            stalled.add(conn)
                            out.served_up_to(progress)
                        else:
                            del self.pending[conn][where]
                            batch.resend(conn, rec, topic, p)
                got = sender.read(rec, match)
                if got is None:
                    progress[key] = rec.offset + 1
                    continue
                msg, hit = got
                for conn, granted in hit:
                    out = conn.outbound
                    if conn in stalled or rec.offset < out.cursor.get(key, 0):
                        continue
                    rep = replays.get(conn) if replays else None
                    if rep is not None and rep.skips(key, rec.offset, msg[0], rec.timestamp_ms):
                        continue
                    if out.window_full:
                        # Window full: it goes on from here in a later pass.
                        stalled.add(conn)
                        out.served_up_to(progress)
                        out.stopped_at(key, rec.offset)
                        continue
                    batch.send(conn, rec, msg, min(msg[1], granted))
                batch.added(len(msg[2]))  # a connection that does not read pauses in time
                progress[key] = rec.offset + 1
            sent += batch.sent_total + batch.resent
            count_out(batch.sent)
            batch.flush()
        for conn in conns:
            if conn not in stalled:
                conn.outbound.served_up_to(upto)
        return sent
