"""The "Bayou ingress" dashboard: each MQTT ingress node, chosen with the ``instance`` variable."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from dashboards import metrics as m
from dashboards.board import assemble, variable
from dashboards.panels import Query, timeseries
from dashboards.promql import quantile, rate_sum

UID = "bayou-ingress"
TITLE = "Bayou ingress"
NODE = 'instance=~"$instance"'


def _rate(name: str, by: str = "instance") -> str:
    return rate_sum(name, by, NODE)


def _gauge(name: str) -> str:
    return f"sum by (instance) ({name}{{{NODE}}})"


def build() -> Dashboard:
    """The ingress dashboard: one series per node (or per node and label)."""
    panels = [
        timeseries(
            "Connections",
            "How many MQTT clients are connected to each node, and how many connect per second?",
            Query(_gauge(m.INGRESS_CONNECTIONS), "{{instance}} open"),
            Query(_rate(m.INGRESS_CONNECTS), "{{instance}} connects/s"),
        ),
        timeseries(
            "Subscriptions",
            "How many subscriptions does each node hold?",
            Query(_gauge(m.INGRESS_SUBSCRIPTIONS), "{{instance}}"),
        ),
        timeseries(
            "Messages in by QoS",
            "How many PUBLISH packets per second does each node receive, at each QoS?",
            Query(_rate(m.INGRESS_MESSAGES_IN, "instance, qos"), "{{instance}} qos {{qos}}"),
            unit="msg/s",
        ),
        timeseries(
            "Messages in by Kafka topic",
            "Which Kafka topics do the node's incoming messages go to, and at what rate?",
            Query(
                _rate(m.INGRESS_MESSAGES_IN, "instance, kafka_topic"),
                "{{instance}} {{kafka_topic}}",
            ),
            unit="msg/s",
        ),
        timeseries(
            "Messages out by QoS",
            "How many PUBLISH packets per second does each node send to subscribers, at each QoS?",
            Query(_rate(m.INGRESS_MESSAGES_OUT, "instance, qos"), "{{instance}} qos {{qos}}"),
            unit="msg/s",
        ),
        timeseries(
            "Messages out by Kafka topic",
            "Which Kafka topics are the messages delivered to subscribers read from?",
            Query(
                _rate(m.INGRESS_MESSAGES_OUT, "instance, kafka_topic"),
                "{{instance}} {{kafka_topic}}",
            ),
            unit="msg/s",
        ),
        timeseries(
            "Bytes in / out",
            "How much traffic does each node read from and write to MQTT client sockets?",
            Query(_rate(m.INGRESS_BYTES_IN), "{{instance}} in"),
            Query(_rate(m.INGRESS_BYTES_OUT), "{{instance}} out"),
            unit="Bps",
        ),
        timeseries(
            "Kafka produce latency",
            "How long does Kafka take to acknowledge a node's record (what a QoS 1 publisher "
            "waits for its PUBACK), p50 and p99?",
            Query(quantile(0.5, m.INGRESS_PRODUCE_SECONDS, "instance", NODE), "{{instance}} p50"),
            Query(quantile(0.99, m.INGRESS_PRODUCE_SECONDS, "instance", NODE), "{{instance}} p99"),
            unit="s",
        ),
        timeseries(
            "End-to-end latency",
            "How long from a message reaching Bayou to its write to a subscriber's socket on "
            "this node, p50 and p99?",
            Query(
                quantile(0.5, m.INGRESS_END_TO_END_SECONDS, "instance", NODE), "{{instance}} p50"
            ),
            Query(
                quantile(0.99, m.INGRESS_END_TO_END_SECONDS, "instance", NODE), "{{instance}} p99"
            ),
            unit="s",
        ),
        timeseries(
            "Kafka produce failures",
            "Is a node failing to write to Kafka (no PUBACK sent; the client resends)?",
            Query(_rate(m.INGRESS_PRODUCE_FAILURES), "{{instance}}"),
            unit="ops",
        ),
        timeseries(
            "Persistent sessions",
            "How many persistent sessions does each node know, and how often are they created, "
            "resumed or taken over?",
            Query(_gauge(m.INGRESS_SESSIONS_STORED), "{{instance}} stored"),
            Query(_rate(m.INGRESS_SESSIONS_CREATED), "{{instance}} created/s"),
            Query(_rate(m.INGRESS_SESSIONS_RESUMED), "{{instance}} resumed/s"),
            Query(_rate(m.INGRESS_TAKEOVERS), "{{instance}} takeovers/s"),
        ),
        timeseries(
            "Retained messages",
            "How many retained messages has each node materialised?",
            Query(_gauge(m.INGRESS_RETAINED), "{{instance}}"),
        ),
        timeseries(
            "Catch-ups",
            "How often are connections brought up to date from Kafka, and how many messages "
            "does catch-up send?",
            Query(_rate(m.INGRESS_CATCH_UPS), "{{instance}} catch-ups/s"),
            Query(_rate(m.INGRESS_REPLAYED), "{{instance}} replayed msg/s"),
        ),
        timeseries(
            "Wills and dropped duplicates",
            "How many wills does each node publish, and how many duplicate agent results does "
            "it drop?",
            Query(_rate(m.INGRESS_WILLS), "{{instance}} wills/s"),
            Query(_rate(m.INGRESS_DUPLICATES_DROPPED), "{{instance}} duplicates/s"),
            unit="ops",
        ),
        timeseries(
            "Refusals by reason",
            "What does each node refuse, and why: authentication by reason, ACL by action, "
            "limits by limit, protocol errors by kind?",
            Query(_rate(m.AUTH_FAILURES, "instance, reason"), "{{instance}} auth {{reason}}"),
            Query(_rate(m.ACL_DENIED, "instance, action"), "{{instance}} acl {{action}}"),
            Query(_rate(m.LIMIT_REFUSALS, "instance, limit"), "{{instance}} limit {{limit}}"),
            Query(
                _rate(m.INGRESS_PROTOCOL_ERRORS, "instance, kind"), "{{instance}} protocol {{kind}}"
            ),
            unit="ops",
            width=24,
        ),
    ]
    nodes = variable("instance", "Node", f"label_values({m.INGRESS_READY}, instance)")
    return assemble(
        UID,
        TITLE,
        "Each MQTT ingress node: connections, traffic by QoS and Kafka topic, latency, "
        "sessions, retained messages, catch-ups and refusals.",
        panels,
        [nodes],
    )
