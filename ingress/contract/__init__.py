"""The record contract between ingress and agents (DESIGN §3), and MQTT's topic rules.

Only constants, pydantic models and pure functions live here: importing this package must not
import the broker, amqtt or any Kafka client. Nothing else in Bayou defines header names.
:mod:`ingress.contract.records` holds the header names, topic defaults and record models;
:mod:`ingress.contract.topics` validates and matches MQTT topic names and filters, the one
matcher both the broker (subscriptions, retained) and the agents (stream patterns) use.
"""

from ingress.contract.records import (
    DEADLETTER_TOPIC,
    DEFAULT_TOPIC,
    DEMO_TELEMETRY_TOPIC,
    H_DEADLETTER_AGENT,
    H_DEADLETTER_REASON,
    H_DEADLETTER_SOURCE_OFFSET,
    H_DEADLETTER_SOURCE_PARTITION,
    H_DEADLETTER_SOURCE_TOPIC,
    H_INGRESS_TS,
    H_MQTT_CLIENT_ID,
    H_MQTT_QOS,
    H_MQTT_RETAIN,
    H_MQTT_TOPIC,
    H_RESULT_ID,
    H_RETAINED_WRITE,
    OUTBOUND_TOPIC,
    QOS_OF_VALUE,
    QOS_VALUES,
    RETAIN_VALUES,
    RETAINED_TOPIC,
    SESSIONS_TOPIC,
    Headers,
    InboundRecord,
    OutboundMessage,
    header,
    publish_headers,
)

__all__ = [
    "DEADLETTER_TOPIC",
    "DEFAULT_TOPIC",
    "DEMO_TELEMETRY_TOPIC",
    "H_DEADLETTER_AGENT",
    "H_DEADLETTER_REASON",
    "H_DEADLETTER_SOURCE_OFFSET",
    "H_DEADLETTER_SOURCE_PARTITION",
    "H_DEADLETTER_SOURCE_TOPIC",
    "H_INGRESS_TS",
    "H_MQTT_CLIENT_ID",
    "H_MQTT_QOS",
    "H_MQTT_RETAIN",
    "H_MQTT_TOPIC",
    "H_RESULT_ID",
    "H_RETAINED_WRITE",
    "OUTBOUND_TOPIC",
    "QOS_OF_VALUE",
    "QOS_VALUES",
    "RETAINED_TOPIC",
    "RETAIN_VALUES",
    "SESSIONS_TOPIC",
    "Headers",
    "InboundRecord",
    "OutboundMessage",
    "header",
    "publish_headers",
]
