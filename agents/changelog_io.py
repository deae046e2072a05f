"""What the two readers of changelogs share: the state restore (:mod:`agents.app_store`) and the
global-table follower (:mod:`agents.global_tables`). Both assign partitions themselves (no group
membership), read committed records only, and are told when they reach a partition's end."""

from __future__ import annotations

from typing import Any

# Errors a reader cannot outwait; librdkafka retries the others (a broker restarting, say).
_LASTING = (3, 29)  # UNKNOWN_TOPIC_OR_PART, TOPIC_AUTHORIZATION_FAILED


def reader_conf(bootstrap: str, group: str) -> dict[str, Any]:
    """confluent-kafka consumer settings of a changelog reader (``group`` only names it)."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    }


def lasting(err: Any) -> bool:
    """A read error (other than end of partition) to raise rather than log and wait out."""
    return bool(err.fatal()) or err.code() in _LASTING
