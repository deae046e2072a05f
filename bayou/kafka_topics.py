"""Create the Kafka topics Bayou needs, explicitly (Tansu auto-creates with 4 partitions)."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


async def ensure_topics(
    bootstrap: str,
    topics: list[str],
    partitions: int,
    replication_factor: int,
    compacted: frozenset[str] = frozenset(),
) -> list[str]:
    """Create the missing topics; return the names it created.

    Topics in ``compacted`` get ``cleanup.policy=compact``: they hold the latest value per key
    (retained messages, sessions). The embedded broker never compacts (DESIGN §10); readers
    materialise them last-value-wins either way.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if not missing:
            return []
        try:
            await admin.create_topics(
                [
                    NewTopic(
                        t,
                        partitions,
                        replication_factor,
                        topic_configs={"cleanup.policy": "compact"} if t in compacted else {},
                    )
                    for t in missing
                ]
            )
        except TopicAlreadyExistsError:
            # Another process (a second node) created it between list and create: fine.
            pass
        return missing
    finally:
        await admin.close()
