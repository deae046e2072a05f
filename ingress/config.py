"""What an ingress node needs to know; built by the command line from the settings.

Plain data: :class:`ingress.node.IngressNode` hands it to the parts it builds.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from ingress.contract import (
    COMMANDS_TOPIC,
    DEFAULT_TOPIC,
    OUTBOUND_TOPIC,
    RETAINED_TOPIC,
    SESSIONS_TOPIC,
)
from ingress.routing.rules import EgressRule, RouteRule
from ingress.security.config import SecurityConfig
from kafkaio.security import KafkaSecurity


class IngressConfig(BaseModel):
    """Configuration of one ingress node (plain data, no environment reads)."""

    kafka_bootstrap: str
    # How every Kafka client of the node authenticates and encrypts (default PLAINTEXT).
    kafka_security: KafkaSecurity = Field(default_factory=KafkaSecurity)
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = 9464
    routes: list[RouteRule] = Field(default_factory=list)
    egress_routes: list[EgressRule] = Field(default_factory=list)
    default_topic: str = DEFAULT_TOPIC
    outbound_topics: list[str] = Field(default_factory=lambda: [OUTBOUND_TOPIC])
    # Kafka producer batching: the linger trades a little latency for far fewer requests.
    producer_linger_ms: int = 2
    max_packet_size: int = 1024 * 1024
    max_inflight_out: int = 1000
    # Kafka fetch wait of the delivery readers (BAYOU_KAFKA_FETCH_WAIT_MS; 5 suits the
    # embedded broker, which holds a fetch for the whole wait even when data arrives).
    fetch_wait_ms: int = 5
    # MQTT 5 (docs/mqtt.md): QoS 1/2 publishes a client may have unacknowledged (Receive
    # Maximum announced in CONNACK), topic aliases it may set, and the longest keep-alive
    # accepted (0: the client's; else CONNACK's Server Keep Alive caps it, and replaces 0).
    receive_maximum: int = 65535
    topic_alias_maximum: int = 64
    max_keep_alive: int = 0
    # How far back an MQTT 5 replay subscription may ask for history (s; 0: no replays).
    replay_max_seconds: int = 86_400
    # Session timeout of the Kafka consumer group behind each shared subscription: how long a
    # node that died holds its partitions before the others serve them (docs/mqtt.md).
    share_session_timeout_ms: int = 6_000
    node_id: str = "ingress-1"
    reuse_port: bool = False
    retained_topic: str = RETAINED_TOPIC
    sessions_topic: str = SESSIONS_TOPIC
    # Where closed-loop command events go (ingress.contract.commands).
    commands_topic: str = COMMANDS_TOPIC
    # Optional listeners besides plain TCP (None = off).
    tls_port: int | None = None
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    ws_port: int | None = None
    # Authentication, ACLs and limits; the default lets nobody in (no method, no anonymous).
    security: SecurityConfig = Field(default_factory=SecurityConfig)
