"""Closed-loop commands: what ``ctx.command(..., expect_response=seconds)`` starts, and the status
each command has in the tracker's table (docs/agents.md, "Commands with a response").

The events of a command (:mod:`ingress.contract.commands`: ``sent`` by the worker,
``delivered``, ``refused`` and ``acknowledged`` by the ingress) arrive in ``bayou.commands``
keyed by its id, in any order (they come from different processes); :func:`fold` merges one
into the command's entry and :func:`expire` times it out. Both are pure (entry in, entry and
what changed out), so the tracker (:mod:`agents.runtime.command_tracker`) and the tests run the
same rules.

An entry (a JSON object) holds ``status`` (``sent``, ``delivered``, ``acknowledged``,
``refused``, ``timed_out``), what the ``sent`` event said (``app``, ``agent``, ``topic``,
``device``, ``sent_at_ms``, ``deadline_ms``), ``delivered_at_ms`` and ``client_id`` once delivered,
``acknowledged_at_ms`` and ``response`` (text, when short) once answered, ``refused_at_ms`` and
``reason_code`` once an MQTT 5 device refused the PUBLISH, ``timed_out_at_ms``.
A status only moves forward; ``refused`` and ``timed_out`` are final except for a response (one
the ingress stamped before the deadline, for ``timed_out``: its event may arrive after the
tracker timed the command out).
"""

from __future__ import annotations

import hashlib
from typing import Any

from agents.global_tables import GlobalTable
from ingress.contract.commands import (
    ACKNOWLEDGED,
    COMMAND_ID_PREFIX,
    DELIVERED,
    REFUSED,
    SENT,
    TIMED_OUT,
)

TRACKER_APP = "bayou-commands"
STATUS_TABLE = "status"
_RANK = {SENT: 0, DELIVERED: 1, ACKNOWLEDGED: 2, REFUSED: 2, TIMED_OUT: 2}
FINAL = (ACKNOWLEDGED, REFUSED, TIMED_OUT)
Entry = dict[str, Any]


def command_id(source: str, result_id: str) -> str:
    """The id of the command ``source`` (``<app>.<agent>``) sent with ``result_id``: the same
    input gives the same id on any worker, so a command sent again after a restart is the same
    command."""
    digest = hashlib.sha256(f"{source}\0{result_id}".encode()).hexdigest()
    return COMMAND_ID_PREFIX + digest[:24]


def command_statuses(app: Any) -> GlobalTable:
    """The tracker's status table, read-only, for an agent of ``app`` (an
    :class:`agents.app.App`): ``statuses.get(command_id)`` is the command's entry."""
    table: GlobalTable = app.global_table(TRACKER_APP, STATUS_TABLE)
    return table


def is_final(entry: Entry) -> bool:
    """Acknowledged, refused or timed out."""
    return entry.get("status") in FINAL


def fold(entry: Entry | None, event: Entry) -> tuple[Entry, list[str]]:
    """``entry`` with ``event`` merged in, and the statuses it reached (for the metrics)."""
    old: Entry = entry or {}
    new: Entry = dict(old)
    kind = event.get("status")
    at = event.get("at_ms")
    if kind == SENT:
        for k in ("app", "agent", "topic", "device", "response_topic", "sent_at_ms",
                  "deadline_ms"):  # fmt: skip
            if k in event:
                new.setdefault(k, event[k])  # a command sent again keeps its first time
        new.setdefault("status", SENT)
    elif kind == DELIVERED:
        new.setdefault("delivered_at_ms", at)
        new.setdefault("client_id", event.get("client_id"))
        if _RANK.get(new.get("status", SENT), 0) < _RANK[DELIVERED]:
            new["status"] = DELIVERED
    elif kind == REFUSED:
        # The device's client would not take it (MQTT 5 PUBACK/PUBREC 0x80 or above): final at
        # once, no need to wait for the deadline; a response that still comes wins.
        new.setdefault("refused_at_ms", at)
        new.setdefault("reason_code", event.get("reason_code"))
        new.setdefault("client_id", event.get("client_id"))
        if not is_final(new):
            new["status"] = REFUSED
    elif kind == ACKNOWLEDGED:
        deadline = new.get("deadline_ms")
        on_time = deadline is None or at is None or at <= deadline
        if new.get("status") == ACKNOWLEDGED:
            pass  # a second response: the first one stands
        elif new.get("status") == TIMED_OUT and not on_time:
            new.setdefault("late_response_at_ms", at)
        else:
            new["status"] = ACKNOWLEDGED
            new["acknowledged_at_ms"] = at
            new.setdefault("client_id", event.get("client_id"))
            for k in ("response", "response_bytes"):
                if k in event:
                    new[k] = event[k]
            new.pop("timed_out_at_ms", None)
    else:
        raise ValueError(f"unknown command event status {kind!r}")
    return new, _reached(old, new)


def expire(entry: Entry, now_ms: int) -> tuple[Entry, list[str]] | None:
    """``entry`` timed out at ``now_ms`` (and ``["timed_out"]``), or None if it has not: it is
    final already, or its deadline (known once its ``sent`` event is in) is still ahead."""
    deadline = entry.get("deadline_ms")
    if is_final(entry) or deadline is None or now_ms <= deadline:
        return None
    return {**entry, "status": TIMED_OUT, "timed_out_at_ms": now_ms}, [TIMED_OUT]


def _reached(old: Entry, new: Entry) -> list[str]:
    """What the fold recorded for the first time: ``sent`` and ``delivered`` by their times
    (they may arrive in either order), the final statuses by the status."""
    out = [s for s, k in ((SENT, "sent_at_ms"), (DELIVERED, "delivered_at_ms"))
           if k in new and k not in old]  # fmt: skip
    status = new.get("status")
    if status != old.get("status") and status in FINAL:
        out.append(status)
    return out
