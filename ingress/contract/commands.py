"""The closed-loop command contract (docs/agents.md, "Commands with a response").

An agent's ``ctx.command(..., expect_response=seconds)`` gives the command an id
(:data:`COMMAND_ID_PREFIX` and 24 hex digits), sends it with the header :data:`H_COMMAND_ID`, and
asks the device to answer on ``<command topic>/response/<command id>`` (:func:`response_topic`):
an MQTT 5 device finds that topic in the command's Response Topic and the id in its Correlation
Data; a 3.1.1 device finds the id in the payload's ``command_id`` field and publishes to that
topic by the convention.

What happens to a command is written to :data:`COMMANDS_TOPIC`, keyed by its id, as small JSON
events: ``sent`` by the agent worker with the command, ``delivered`` by the ingress node when the
device's client acknowledges the PUBLISH (PUBACK; PUBREC at QoS 2), ``refused`` instead when an
MQTT 5 client answers it with a reason code of 0x80 or above, ``acknowledged`` by the node that
receives the device's response. The worker's command tracker folds them into a table.

Pure functions and constants only, as the rest of the contract.
"""

from __future__ import annotations

import json
import re

# On the outbound record of a command that expects a response: its id (UTF-8).
H_COMMAND_ID = "bayou.command_id"
COMMANDS_TOPIC = "bayou.commands"
COMMAND_ID_PREFIX = "cmd-"
RESPONSE_LEVEL = "response"
# What a topic must contain to be a response: checked on every PUBLISH, so a plain substring.
RESPONSE_MARK = f"/{RESPONSE_LEVEL}/{COMMAND_ID_PREFIX}"
_ID = re.compile(r"cmd-[0-9a-f]{24}")

SENT = "sent"
DELIVERED = "delivered"
ACKNOWLEDGED = "acknowledged"
TIMED_OUT = "timed_out"
REFUSED = "refused"
STATUSES = (SENT, DELIVERED, ACKNOWLEDGED, TIMED_OUT, REFUSED)
# A response's payload kept in its event (and the status table) up to this size, as text.
MAX_RESPONSE_KEPT = 1024


def is_command_id(text: str) -> bool:
    """True for a command id Bayou makes."""
    return _ID.fullmatch(text) is not None


def response_topic(command_topic: str, command_id: str) -> str:
    """Where the device answers the command ``command_id`` sent to ``command_topic``."""
    return f"{command_topic}/{RESPONSE_LEVEL}/{command_id}"


def command_id_of_response(topic: str) -> str | None:
    """The command id a publish to ``topic`` answers, or None when it is not a response."""
    if RESPONSE_MARK not in topic:
        return None
    head, _, last = topic.rpartition("/")
    if not head.endswith("/" + RESPONSE_LEVEL) or not is_command_id(last):
        return None
    return last


def delivered_event(client_id: str, at_ms: int) -> bytes:
    """The ``delivered`` event: ``client_id`` acknowledged the command's PUBLISH at ``at_ms``."""
    return json.dumps(
        {"status": DELIVERED, "client_id": client_id, "at_ms": at_ms}, separators=(",", ":")
    ).encode()


def refused_event(client_id: str, at_ms: int, reason_code: int) -> bytes:
    """The ``refused`` event: ``client_id`` answered the command's PUBLISH with MQTT 5 reason
    ``reason_code`` (0x80 or above: not authorized, quota exceeded...) at ``at_ms``."""
    return json.dumps(
        {"status": REFUSED, "client_id": client_id, "at_ms": at_ms, "reason_code": reason_code},
        separators=(",", ":"),
    ).encode()


def acknowledged_event(client_id: str, at_ms: int, payload: bytes) -> bytes:
    """The ``acknowledged`` event: ``client_id`` published the response ``payload``; kept as
    text when it is UTF-8 of at most :data:`MAX_RESPONSE_KEPT` bytes."""
    event: dict[str, object] = {
        "status": ACKNOWLEDGED,
        "client_id": client_id,
        "at_ms": at_ms,
        "response_bytes": len(payload),
    }
    if len(payload) <= MAX_RESPONSE_KEPT:
        try:
            event["response"] = payload.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return json.dumps(event, separators=(",", ":")).encode()
