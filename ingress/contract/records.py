"""The record contract between ingress and agents (DESIGN §3): header names, topic defaults,
record models.

Only constants and pydantic models live here: importing this module must not import the
broker, amqtt or aiokafka. Nothing else in Bayou defines header names.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

# Kafka header names carried by every record the ingress writes.
H_MQTT_TOPIC = "mqtt.topic"
H_MQTT_QOS = "mqtt.qos"
H_MQTT_RETAIN = "mqtt.retain"
H_MQTT_CLIENT_ID = "mqtt.client_id"
H_INGRESS_TS = "bayou.ingress_ts"
# Deterministic id of an agent result (window, alert, command): duplicates are dropped.
H_RESULT_ID = "bayou.result_id"

# Headers on dead-lettered records (written by agents, read by operators).
H_DEADLETTER_REASON = "bayou.error"
H_DEADLETTER_SOURCE_TOPIC = "bayou.source_topic"
H_DEADLETTER_SOURCE_PARTITION = "bayou.source_partition"
H_DEADLETTER_SOURCE_OFFSET = "bayou.source_offset"
H_DEADLETTER_AGENT = "bayou.agent"

# Default topic names: the contract for docs and dashboards; all are configurable.
DEFAULT_TOPIC = "bayou.messages"
OUTBOUND_TOPIC = "bayou.outbound"
DEADLETTER_TOPIC = "bayou.deadletter"
RETAINED_TOPIC = "bayou.retained"
SESSIONS_TOPIC = "bayou.sessions"

Headers = list[tuple[str, bytes]]


class InboundRecord(BaseModel):
    """An MQTT publish as it is written to Kafka."""

    topic: str = Field(description="Kafka topic chosen by the route rule")
    key: bytes
    value: bytes
    mqtt_topic: str
    qos: int = Field(ge=0, le=2)
    retain: bool = False
    client_id: str
    ingress_ts_ms: int

    def headers(self) -> Headers:
        """Kafka headers in the contract's names and encodings (UTF-8 text)."""
        return [
            (H_MQTT_TOPIC, self.mqtt_topic.encode()),
            (H_MQTT_QOS, str(self.qos).encode()),
            (H_MQTT_RETAIN, b"1" if self.retain else b"0"),
            (H_MQTT_CLIENT_ID, self.client_id.encode()),
            (H_INGRESS_TS, str(self.ingress_ts_ms).encode()),
        ]


class OutboundMessage(BaseModel):
    """A record for MQTT subscribers (Kafka → MQTT)."""

    mqtt_topic: str
    payload: bytes
    qos: int = Field(default=0, ge=0, le=2)
    retain: bool = False
    key: bytes | None = None

    def headers(self, ingress_ts_ms: int | None = None) -> Headers:
        """Kafka headers for an outbound record; ``ingress_ts_ms`` carries end-to-end latency."""
        out: Headers = [
            (H_MQTT_TOPIC, self.mqtt_topic.encode()),
            (H_MQTT_QOS, str(self.qos).encode()),
            (H_MQTT_RETAIN, b"1" if self.retain else b"0"),
        ]
        if ingress_ts_ms is not None:
            out.append((H_INGRESS_TS, str(ingress_ts_ms).encode()))
        return out


def header(headers: Headers | None, name: str) -> bytes | None:
    """The first value of header ``name``, or None."""
    for k, v in headers or ():
        if k == name:
            return v
    return None
