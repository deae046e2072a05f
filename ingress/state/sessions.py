"""Persistent MQTT sessions (clean session = 0), kept in the compacted topic ``bayou.sessions``.

A session record, keyed by client id, holds the subscriptions, the position per delivery
partition up to which the session was served, the outbound QoS 1/2 messages still in flight
(by Kafka offset and packet id) and the inbound QoS 2 packet ids awaiting PUBREL. Messages
themselves are never copied: on reconnect, to any node, they are read again from Kafka from
those positions (DESIGN §2), so an offline device costs the broker only its small entry here.
:mod:`ingress.session_manager` reads and writes these records.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ingress.metrics import SESSIONS_STORED
from kafkaio.reader import Record

PartitionKey = tuple[str, int]
# How long past its last checkpoint a session with no disconnect is taken for connected.
_GRACE_MS = 30_000


@dataclass(slots=True)
class Pending:
    """An outbound QoS 1/2 message sent and not yet completed by the client."""

    topic: str
    partition: int
    offset: int
    packet_id: int
    qos: int
    released: bool = False  # QoS 2: PUBREC received, PUBREL sent, PUBCOMP outstanding


@dataclass(slots=True)
class SessionState:
    """Everything a node needs to resume a client's session."""

    client_id: str
    subscriptions: dict[str, int] = field(default_factory=dict)
    served: dict[PartitionKey, int] = field(default_factory=dict)
    pending: list[Pending] = field(default_factory=list)
    qos2_in: list[int] = field(default_factory=list)
    owner: str = ""  # "<node id>/<connection start ms>" of the connection that owns it
    clean: bool = False  # a clean session's record only claims the client id
    # MQTT 5: Session Expiry Interval (s; None: 3.1.1, never expires) and, once the client
    # is gone, when it went (wall-clock ms); subscription options by filter: [no local,
    # retain as published, subscription identifier or 0].
    expiry_s: int | None = None
    gone_ms: int = 0
    # When a node last checkpointed it while connected (ms): a session whose node died
    # (no record with ``gone_ms``) expires counted from then, after a grace period.
    seen_ms: int = 0
    # The connection that owns it came with Clean Start / clean session 1: it ended the
    # session before it (a delayed will of that session goes out then, §3.1.3.2.2).
    clean_start: bool = False
    options: dict[str, list[int]] = field(default_factory=dict)

    def expired(self, now_ms: int) -> bool:
        """The client has been gone longer than its Session Expiry Interval."""
        if self.expiry_s is None or self.expiry_s == 0xFFFF_FFFF:
            return False
        if self.gone_ms:
            return now_ms - self.gone_ms > self.expiry_s * 1000
        # No disconnect written: gone with its node, at most a checkpoint after seen_ms.
        return bool(self.seen_ms) and now_ms - self.seen_ms > self.expiry_s * 1000 + _GRACE_MS

    def to_bytes(self) -> bytes:
        """The record value written to ``bayou.sessions``."""
        doc: dict[str, Any] = {
            "v": 1,
            "subs": self.subscriptions,
            # {topic: [offset of partition 0, 1, ...]}: compact, since every offline session
            # keeps this in the node's index (-1: a partition with no position).
            "served": _compact(self.served),
            "pending": [
                [x.topic, x.partition, x.offset, x.packet_id, x.qos, x.released]
                for x in self.pending
            ],
            "qos2_in": self.qos2_in,
            "owner": self.owner,
            "clean": self.clean,
        }
        if self.expiry_s is not None:
            doc["exp"] = self.expiry_s
            doc["gone"] = self.gone_ms
            doc["seen"] = self.seen_ms
        if self.options:
            doc["opts"] = self.options
        if self.clean_start:
            doc["cs"] = True
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, client_id: str, raw: bytes) -> SessionState:
        """Parse a record value; raises ValueError on a record this version cannot read."""
        doc = json.loads(raw)
        if doc.get("v") != 1:
            raise ValueError(f"session record version {doc.get('v')!r}")
        return cls(
            client_id=client_id,
            subscriptions={str(k): int(v) for k, v in doc["subs"].items()},
            served={
                (str(t), p): int(o)
                for t, offsets in doc["served"].items()
                for p, o in enumerate(offsets)
                if o >= 0
            },
            pending=[
                Pending(str(t), int(p), int(o), int(pid), int(q), bool(r))
                for t, p, o, pid, q, r in doc["pending"]
            ],
            qos2_in=[int(x) for x in doc["qos2_in"]],
            owner=str(doc.get("owner", "")),
            clean=bool(doc.get("clean", False)),
            expiry_s=None if doc.get("exp") is None else int(doc["exp"]),
            gone_ms=int(doc.get("gone", 0)),
            seen_ms=int(doc.get("seen", 0)),
            options={str(k): [int(x) for x in v] for k, v in doc.get("opts", {}).items()},
            clean_start=bool(doc.get("cs", False)),
        )


def _compact(served: dict[PartitionKey, int]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for (topic, partition), offset in served.items():
        offsets = out.setdefault(topic, [])
        offsets.extend([-1] * (partition + 1 - len(offsets)))
        offsets[partition] = offset
    return out


class SessionStore:
    """Client id → its persistent session record as stored (bytes, parsed only on reconnect).

    Keeping the raw value keeps an offline session to a few hundred bytes of broker memory.
    Records of clean sessions only claim a client id (for takeover): they are passed to the
    ``owner_listeners`` but not kept, so the index holds persistent sessions only, also when a
    crashed node never wrote the tombstone of its clean sessions.
    """

    def __init__(self) -> None:
        self._raw: dict[str, bytes] = {}
        # Called with (client id, owner) for every session record read.
        # Called with (client id, owner, clean start) for every session record read.
        self.owner_listeners: list[Callable[[str, str, bool], None]] = []

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, client_id: str) -> bool:
        return client_id in self._raw

    def get(self, client_id: str) -> SessionState | None:
        """The stored persistent session of ``client_id``, or None."""
        raw = self._raw.get(client_id)
        return None if raw is None else SessionState.from_bytes(client_id, raw)

    def put(self, client_id: str, raw: bytes | None) -> tuple[str, bool]:
        """Store a persistent session record; forget it on a tombstone or a clean record.

        Returns the record's owner ("" for a tombstone or an unreadable record) and whether
        its connection came with a clean start.
        """
        owner = ""
        clean = raw is None
        clean_start = False
        if raw is not None:
            try:
                doc = json.loads(raw)
                owner, clean = str(doc.get("owner", "")), bool(doc.get("clean", False))
                clean_start = bool(doc.get("cs", False))
            except ValueError:
                clean = True  # unreadable: nothing to resume from
        if clean:
            self._raw.pop(client_id, None)
        else:
            assert raw is not None
            self._raw[client_id] = raw
        SESSIONS_STORED.set(len(self._raw))
        return owner, clean_start

    def expiring(self) -> list[tuple[str, SessionState]]:
        """The stored sessions that have a Session Expiry Interval (MQTT 5), parsed."""
        out: list[tuple[str, SessionState]] = []
        for client_id, raw in self._raw.items():
            if b'"exp"' in raw:  # cheap: most sessions are 3.1.1 ones
                try:
                    out.append((client_id, SessionState.from_bytes(client_id, raw)))
                except ValueError:
                    continue
        return out

    def apply(self, records: list[Record]) -> None:
        """Apply records of the sessions topic, in log order."""
        for rec in records:
            if rec.key is None:
                continue
            client_id = rec.key.decode("utf-8", "replace")
            owner, clean_start = self.put(client_id, rec.value)
            if owner:
                for listener in self.owner_listeners:
                    listener(client_id, owner, clean_start)
