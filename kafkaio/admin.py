"""Creating the Kafka topics Bayou needs, explicitly, with confluent-kafka's ``AdminClient``.

Explicitly, because an auto-created topic gets the broker's defaults (4 partitions on the
embedded broker, no compaction; DESIGN §10).
"""

from __future__ import annotations

import asyncio
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from kafkaio.clients import connected_admin
from kafkaio.security import PLAINTEXT, KafkaSecurity

_TIMEOUT_S = 15.0


async def ensure_topics(
    bootstrap: str,
    topics: list[str],
    partitions: int,
    replication_factor: int,
    compacted: frozenset[str] = frozenset(),
    security: KafkaSecurity = PLAINTEXT,
) -> list[str]:
    """Create the missing topics; return the names it created.

    The first thing each ``bayou`` command does with Kafka, so it is where wrong credentials
    or a TLS failure surface: :class:`kafkaio.clients.KafkaConnectError`, within a second.

    Topics in ``compacted`` get ``cleanup.policy=compact``: they hold the latest value per key
    (retained messages, sessions, changelogs). The embedded broker never compacts (DESIGN §10);
    readers materialise them last-value-wins either way. The admin calls block, so they run on
    a thread.
    """
    return await asyncio.to_thread(
        _ensure, bootstrap, topics, partitions, replication_factor, compacted, security
    )


def _ensure(
    bootstrap: str,
    topics: list[str],
    partitions: int,
    replication_factor: int,
    compacted: frozenset[str],
    security: KafkaSecurity,
) -> list[str]:
    admin = connected_admin(bootstrap, security, _TIMEOUT_S)
    existing = set(admin.list_topics(timeout=_TIMEOUT_S).topics)
    missing = [t for t in dict.fromkeys(topics) if t not in existing]
    if not missing:
        return []
    # With 3 replicas or more, acks=all must mean two replicas have the record: Kafka's
    # default min.insync.replicas is 1, which lets a lone leader acknowledge (and lose the
    # record with it). Fewer replicas keep the broker's default (2 of 2 would stop writes
    # whenever one broker is down).
    durable = {"min.insync.replicas": "2"} if replication_factor >= 3 else {}
    new = [
        NewTopic(
            t,
            partitions,
            replication_factor,
            config={**durable, **({"cleanup.policy": "compact"} if t in compacted else {})},
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
    _wait_for_leaders(admin, missing)
    return missing


def _wait_for_leaders(admin: AdminClient, topics: list[str]) -> None:
    """Return once the metadata lists ``topics`` with a leader for every partition (or after
    the admin timeout): CreateTopics answers when the controller has them, and a client that
    asks right after may hear that they do not exist or have no leader yet (seen on a new
    3-broker cluster). Readers also wait out a topic that is moments old (kafkaio.reader)."""
    deadline = time.monotonic() + _TIMEOUT_S
    brokers = len(admin.list_topics(timeout=_TIMEOUT_S).brokers)
    while True:
        meta = admin.list_topics(timeout=_TIMEOUT_S)
        ready = len(meta.brokers) >= brokers and all(
            (t := meta.topics.get(name)) is not None
            and t.error is None
            and t.partitions
            and all(p.leader >= 0 for p in t.partitions.values())
            for name in topics
        )
        if ready or time.monotonic() > deadline:
            return
        time.sleep(0.1)
