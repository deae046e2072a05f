"""A connection's outbound state: its QoS 1/2 messages in flight, and whether it is catching up.

The connection owns one :class:`OutboundState`; live delivery, catch-up and the session code
change it only through its methods, each named for what happens (a message goes out, the
client acknowledges, the connection leaves live delivery, it is served up to here...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from ingress.wire.codec import ProtocolError

PartitionKey = tuple[str, int]
# (Kafka topic, partition, offset, qos, released) of an outbound QoS 1/2 message in flight.
# Topic None: not from a delivery topic (a retained message), so never resent from Kafka.
Inflight = tuple[str | None, int, int, int, bool]
# (Kafka topic, partition, offset, packet id, qos, released) of a message to resend.
PendingEntry = tuple[str, int, int, int, int, bool]
# (Kafka topic, partition, offset) of a record.
Where = tuple[str, int, int]


class SharedAck(Protocol):
    """A shared subscription's group on this node (:mod:`ingress.outbound.shared`): told when
    the member a message went to is done with it."""

    def acked(self, where: Where) -> None:
        """The member acknowledged it (PUBACK, PUBREC, or a refusal [MQTT-4.8.2-6])."""

    def lost(self, where: Where, qos: int) -> None:
        """The member's connection ended before it acknowledged."""


class OutboundState:
    """Packet ids in flight, the in-flight window, and the catch-up cursor of one connection.

    ``inflight`` and ``cursor`` are read by others; only the methods here change them.
    """

    __slots__ = (
        "_next_pid",
        "blocked",
        "catching_up",
        "commands",
        "cursor",
        "floor",
        "inflight",
        "max_inflight",
        "reserved",
        "shared",
    )  # fmt: skip

    def __init__(self, max_inflight: int) -> None:
        # Packet id → the message in flight: sent and not yet completed by the client.
        self.inflight: dict[int, Inflight] = {}
        self.max_inflight = max_inflight
        # Off live delivery, being brought up to date from Kafka (ingress/outbound/catch_up.py).
        self.catching_up = False
        # While catching up: per partition, the offset before which everything was handled.
        self.cursor: dict[PartitionKey, int] = {}
        # A replay's boundary: the session record is served at least up to it.
        self.floor: dict[PartitionKey, int] = {}
        self._next_pid = 0
        # More than max_write_buffer bytes wait in the transport (the client does not read):
        # nothing more is queued in memory until it drains (ingress/outbound/live.py).
        self.blocked = False
        # Packet id → (group, record, QoS) of a shared subscription's message in flight.
        self.shared: dict[int, tuple[SharedAck, Where, int]] = {}
        # Packet ids of a resumed session's messages not resent yet: kept from reuse, but not
        # on the wire, so they take no room in the client's window (Receive Maximum).
        self.reserved: set[int] = set()
        # Packet id → command id of a closed-loop command in flight: its PUBACK (PUBREC) is
        # reported as the command's delivery (ingress.contract.commands).
        self.commands: dict[int, bytes] = {}

    @property
    def window_full(self) -> bool:
        """True when ``max_inflight`` messages await the client's acknowledgement, or its
        transport's write buffer is over the limit (catch-up goes on once it drains)."""
        return self.blocked or len(self.inflight) >= self.max_inflight

    @property
    def room_to_resend(self) -> bool:
        """True when a resumed session's message may go out again: fewer than ``max_inflight``
        are on the wire unacknowledged [MQTT-4.9.0-2] and the transport takes writes."""
        return not self.blocked and len(self.inflight) - len(self.reserved) < self.max_inflight

    def writes_paused(self, paused: bool) -> bool:
        """The transport's write buffer went over the limit (True) or drained (False);
        True if catch-up waits for this connection to take writes again."""
        self.blocked = paused
        return not paused and self.catching_up and self.room_to_resend

    # messages in flight ---------------------------------------------------------------------

    def track(self, topic: str | None, partition: int, offset: int, qos: int) -> int:
        """A QoS 1/2 message goes out: return its packet id (1..65535, none in flight)."""
        inflight = self.inflight
        pid = self._next_pid
        for _ in range(65535):
            pid = pid % 65535 + 1
            if pid not in inflight:
                self._next_pid = pid
                inflight[pid] = (topic, partition, offset, qos, False)
                return pid
        raise ProtocolError("65,535 outbound messages in flight")

    def retrack(
        self, packet_id: int, topic: str, partition: int, offset: int, qos: int, released: bool
    ) -> None:
        """A message in flight before goes out again with its packet id (a resend)."""
        self.inflight[packet_id] = (topic, partition, offset, qos, released)
        self.reserved.discard(packet_id)

    def pubrec(self, packet_id: int) -> None:
        """The client received a QoS 2 message: only its PUBCOMP is outstanding."""
        entry = self.inflight.get(packet_id)
        if entry is not None:
            self.inflight[packet_id] = (*entry[:4], True)
        if self.shared:
            self._shared_done(packet_id)

    def complete(self, packet_id: int) -> bool:
        """PUBACK or PUBCOMP ended a flow; True if catch-up waits for this window to open."""
        self.inflight.pop(packet_id, None)
        # An acknowledgement for a message not resent yet (the client had it before it
        # left): it is done, catch-up drops its resend.
        self.reserved.discard(packet_id)
        if self.shared:
            self._shared_done(packet_id)
        return self.catching_up and self.room_to_resend

    def _shared_done(self, packet_id: int) -> None:
        # A shared subscription's message is done once the member has it: a QoS 2 one at
        # PUBREC (from then on it is this member's alone, [MQTT-4.8.2-4]).
        entry = self.shared.pop(packet_id, None)
        if entry is not None:
            entry[0].acked(entry[1])

    def connection_lost(self) -> None:
        """The connection ended: the shared subscriptions' messages in flight go back."""
        shared, self.shared = self.shared, {}
        for group, where, qos in shared.values():
            group.lost(where, qos)

    def pending(self) -> list[PendingEntry]:
        """The messages in flight that Kafka can resend, for the session record."""
        return [
            (t, p, o, pid, q, released)
            for pid, (t, p, o, q, released) in self.inflight.items()
            if t is not None
        ]

    # catching up ----------------------------------------------------------------------------

    def start_catch_up(
        self,
        served: Mapping[PartitionKey, int],
        positions: Mapping[PartitionKey, int],
        pending: Iterable[PendingEntry],
    ) -> bool:
        """Leave live delivery, served up to ``served`` (else up to ``positions``).

        The packet ids of ``pending`` stay reserved until they are resent (or acknowledged).
        False if the connection was already catching up.
        """
        if self.catching_up:
            return False
        self.catching_up = True
        cursor = dict(served)
        for key, end in positions.items():
            cursor.setdefault(key, end)
        self.cursor = cursor
        for topic, partition, offset, pid, qos, released in pending:
            self.inflight[pid] = (topic, partition, offset, qos, released)
            self.reserved.add(pid)
        return True

    def served_up_to(self, upto: Mapping[PartitionKey, int]) -> None:
        """Everything before ``upto`` was handled (the cursor never moves back)."""
        cur = self.cursor
        for key, end in upto.items():
            cur[key] = max(cur.get(key, end), end)

    def stopped_at(self, key: PartitionKey, offset: int) -> None:
        """The window filled at ``offset`` of ``key``: the next pass goes on from there."""
        self.cursor[key] = offset

    def rejoin_live(self) -> None:
        """Up to date: live delivery serves the connection again."""
        self.catching_up = False
        self.floor = {}

    def served(self, positions: Mapping[PartitionKey, int]) -> dict[PartitionKey, int]:
        """Per partition, where the connection was served up to (live: the node's positions)."""
        if not self.catching_up:
            return dict(positions)
        if not self.floor:
            return dict(self.cursor)
        return {k: max(o, self.floor.get(k, o)) for k, o in self.cursor.items()}
