"""What an agent worker needs to know; built by the command line from the settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ingress.contract import COMMANDS_TOPIC, DEADLETTER_TOPIC, OUTBOUND_TOPIC
from kafkaio.security import KafkaSecurity


class WorkerConfig(BaseModel):
    """Configuration of one agent worker (plain data, no environment reads)."""

    kafka_bootstrap: str
    # How every Kafka client of the worker authenticates and encrypts (default PLAINTEXT).
    kafka_security: KafkaSecurity = Field(default_factory=KafkaSecurity)
    group_id: str = "bayou-agents"
    session_timeout_ms: int = 6_000
    # "exactly_once": each batch's outputs, changelog and input offsets in one Kafka transaction
    # (agents.runtime.loop).
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    # How long Kafka keeps a batch transaction open before aborting it: the time a dead
    # worker's partitions wait before another worker can read on (webhook calls count in it).
    transaction_timeout_ms: int = 30_000
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = 9465
    telemetry_topic: str = "bayou.telemetry"
    outbound_topic: str = OUTBOUND_TOPIC
    deadletter_topic: str = DEADLETTER_TOPIC
    # Closed-loop commands (agents.runtime.command_tracker): their events' topic, whether this
    # worker runs the tracker, and how long a final status stays in its table.
    commands_topic: str = COMMANDS_TOPIC
    track_commands: bool = True
    command_retention_seconds: float = 86_400.0
    state_dir: Path = Path(".bayou/state")
    threshold: float = 30.0
    window_seconds: float = 10.0
    alert_cooldown_seconds: float = 60.0
    grace_seconds: float = 2.0
    # Event times further ahead of the wall clock than this do not advance the watermark, so
    # one device with a wrong clock cannot close every other device's windows early.
    max_clock_skew_seconds: float = 300.0
    # Route rules as (MQTT pattern, Kafka topic): where agents' patterns find their topic.
    routes: list[tuple[str, str]] = [("sensors/{device}/telemetry", "bayou.telemetry")]
    # Records taken per batch: the runtime works in batches so per-record overhead stays low.
    batch_max_records: int = 1000
    # How long a fetch may wait for data; small, because commands must reach devices fast.
    fetch_max_wait_ms: int = 10
    # Webhook calls (ctx.webhook): tries after the first failed one, seconds per try, and the
    # first wait between tries (doubling); see agents.runtime.webhooks.
    webhook_retries: int = 2
    webhook_timeout_seconds: float = 5.0
    webhook_backoff_seconds: float = 0.5
