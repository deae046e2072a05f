"""The record contract between ingress and agents (DESIGN §3): header names and values, topic
defaults, record models, and the headers of a record written for an MQTT publish.

Only constants, pydantic models and pure functions live here: importing this module must not
import the broker, amqtt or a Kafka client. Nothing else in Bayou defines header names.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

# Kafka header names carried by every record the ingress writes.
H_MQTT_TOPIC = "mqtt.topic"
H_MQTT_QOS = "mqtt.qos"
H_MQTT_RETAIN = "mqtt.retain"
H_MQTT_CLIENT_ID = "mqtt.client_id"
H_INGRESS_TS = "bayou.ingress_ts"
# MQTT 5 PUBLISH properties, kept on the record (docs/mqtt.md, MQTT 5 and Kafka). User
# properties become headers of their own name; names under these two prefixes are Bayou's.
H_MQTT_CONTENT_TYPE = "mqtt.content_type"
H_MQTT_RESPONSE_TOPIC = "mqtt.response_topic"
H_MQTT_CORRELATION_DATA = "mqtt.correlation_data"  # binary, as the client sent it
H_MQTT_PAYLOAD_FORMAT = "mqtt.payload_format"  # b"1": UTF-8 text, b"0": unspecified bytes
# Wall-clock milliseconds after which the message is not delivered (Message Expiry Interval
# added to the time the node received it); subscribers get the interval that is left.
H_MQTT_EXPIRES_AT = "mqtt.expires_at_ms"
RESERVED_HEADER_PREFIXES = ("mqtt.", "bayou.")
# The headers that carry an MQTT 5 PUBLISH's properties (with the user properties).
MQTT5_PROPERTY_HEADERS = frozenset(
    (H_MQTT_CONTENT_TYPE, H_MQTT_RESPONSE_TOPIC, H_MQTT_CORRELATION_DATA, H_MQTT_PAYLOAD_FORMAT,
     H_MQTT_EXPIRES_AT)
)  # fmt: skip
# Deterministic id of an agent result (window, alert, command): duplicates are dropped.
H_RESULT_ID = "bayou.result_id"
# On ``bayou.retained`` records only: which node process wrote it, and its write number there,
# so the node tells its own writes read back from equal ones of other nodes.
H_RETAINED_WRITE = "bayou.retained_write"

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
# The built-in route's topic: the demo's devices publish their readings here.
DEMO_TELEMETRY_TOPIC = "bayou.telemetry"

Headers = list[tuple[str, bytes]]

# Header values of mqtt.qos (by QoS) and mqtt.retain (by flag), and the QoS a value stands for.
QOS_VALUES = (b"0", b"1", b"2")
RETAIN_VALUES = (b"0", b"1")
QOS_OF_VALUE = {b"0": 0, b"1": 1, b"2": 2}


def publish_headers(
    mqtt_topic: bytes, qos: int, retain: bool, client_id: bytes, ingress_ts_ms: int
) -> Headers:
    """The headers of the record written for an MQTT publish, in the contract's order.

    On the node's hot path (once per PUBLISH): it takes the topic and client id already UTF-8
    encoded and builds nothing but the list (measured ~5 % less than encoding inside).
    """
    return [
        (H_MQTT_TOPIC, mqtt_topic),
        (H_MQTT_QOS, QOS_VALUES[qos]),
        (H_MQTT_RETAIN, RETAIN_VALUES[retain]),
        (H_MQTT_CLIENT_ID, client_id),
        (H_INGRESS_TS, b"%d" % ingress_ts_ms),
    ]


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
        return publish_headers(
            self.mqtt_topic.encode(),
            self.qos,
            self.retain,
            self.client_id.encode(),
            self.ingress_ts_ms,
        )


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
            (H_MQTT_QOS, QOS_VALUES[self.qos]),
            (H_MQTT_RETAIN, RETAIN_VALUES[self.retain]),
        ]
        if ingress_ts_ms is not None:
            out.append((H_INGRESS_TS, str(ingress_ts_ms).encode()))
        return out


def is_user_property(name: str) -> bool:
    """A Kafka header name an MQTT 5 user property may have (and that is delivered as one):
    any name outside Bayou's own prefixes."""
    return not name.startswith(RESERVED_HEADER_PREFIXES)


def property_headers(headers: Headers) -> tuple[tuple[str, bytes], ...]:
    """The headers of a record that are MQTT 5 properties: the v5 ones and the user
    properties (every name outside Bayou's prefixes), in order."""
    return tuple((k, v) for k, v in headers if k in MQTT5_PROPERTY_HEADERS or is_user_property(k))


def header(headers: Headers | None, name: str) -> bytes | None:
    """The first value of header ``name``, or None."""
    for k, v in headers or ():
        if k == name:
            return v
    return None
