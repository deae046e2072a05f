"""Creating the Kafka topics Bayou needs, explicitly, with confluent-kafka's ``AdminClient``.

Explicitly, because an auto-created topic gets the broker's defaults (4 partitions on the
embedded broker, no compaction; DESIGN §10).
"""

from __future__ import annotations

import asyncio

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from kafkaio.clients import client_conf

_TIMEOUT_S = 15.0


async def ensure_topics(
    bootstrap: str,
    topics: list[str],
    partitions: int,
    replication_factor: int,
    compacted: frozenset[str] = frozenset(),
) -> list[str]:
    """Create the missing topics; return the names it created.

    Topics in ``compacted`` get ``cleanup.policy=compact``: they hold the latest value per key
    (retained messages, sessions, changelogs). The embedded broker never compacts (DESIGN §10);
    readers materialise them last-value-wins either way. The admin calls block, so they run on
    a thread.
    """
    return await asyncio.to_thread(
        _ensure, bootstrap, topics, partitions, replication_factor, compacted
    )


def _ensure(
    bootstrap: str,
    topics: list[str],
    partitions: int,
    replication_factor: int,
    compacted: frozenset[str],
) -> list[str]:
    admin = AdminClient(client_conf(bootstrap, "bayou-admin"))
    existing = set(admin.list_topics(timeout=_TIMEOUT_S).topics)
    missing = [t for t in dict.fromkeys(topics) if t not in existing]
    if not missing:
        return []
    new = [
        NewTopic(
            t,
            partitions,
            replication_factor,
            config={"cleanup.policy": "compact"} if t in compacted else {},
        )
        for t in missing
    ]
    for future in admin.create_topics(new, request_timeout=_TIMEOUT_S).values():
        try:
            future.result(_TIMEOUT_S)
        except KafkaException as exc:
            # Another process (a second node) created it between list and create: fine.
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return missing
