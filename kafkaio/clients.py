"""Settings of Bayou's confluent-kafka clients: one place, so every client connects alike."""

from __future__ import annotations

from typing import Any


def client_conf(bootstrap: str, client_id: str) -> dict[str, Any]:
    """What every Bayou Kafka client (consumer, producer, admin) is given."""
    return {"bootstrap.servers": bootstrap, "client.id": client_id}


def reader_conf(
    bootstrap: str,
    name: str,
    *,
    read_committed: bool = False,
    fetch_wait_ms: int | None = None,
) -> dict[str, Any]:
    """A consumer that is assigned partitions itself: it never joins its group nor commits."""
    conf: dict[str, Any] = {
        **client_conf(bootstrap, f"bayou-{name}"),
        # Required by librdkafka, unused: partitions are assigned, never committed.
        "group.id": f"bayou-{name}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed" if read_committed else "read_uncommitted",
    }
    if fetch_wait_ms is not None:
        conf["fetch.wait.max.ms"] = fetch_wait_ms
    return conf
