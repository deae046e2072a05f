"""The "Bayou overview" dashboard: is the whole system moving data, how fast, and failing where."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from dashboards import metrics as m
from dashboards.board import assemble
from dashboards.panels import Query, stat, timeseries
from dashboards.promql import quantile, rate_sum

UID = "bayou-overview"
TITLE = "Bayou overview"


def build() -> Dashboard:
    """The overview dashboard: totals across every ingress node and agent worker."""
    panels = [
        stat(
            "Ingress nodes ready",
            "How many ingress nodes accept MQTT and read their Kafka topics right now?",
            Query(f"sum({m.INGRESS_READY})", "nodes"),
        ),
        stat(
            "Agent workers ready",
            "How many agent workers have their partitions and are processing?",
            Query(f"sum({m.AGENT_READY})", "workers"),
        ),
        stat(
            "MQTT connections",
            "How many MQTT clients are connected to Bayou, over all nodes?",
            Query(f"sum({m.INGRESS_CONNECTIONS})", "connections"),
        ),
        stat(
            "Agent consumer lag",
            "How many input records are the agent workers behind, in total?",
            Query(f"sum({m.AGENT_CONSUMER_LAG})", "records"),
        ),
        timeseries(
            "Throughput in / out",
            "How many MQTT messages per second reach Bayou from publishers (in) and leave it "
            "for subscribers (out)?",
            Query(rate_sum(m.INGRESS_MESSAGES_IN), "in"),
            Query(rate_sum(m.INGRESS_MESSAGES_OUT), "out"),
            unit="msg/s",
        ),
        timeseries(
            "End-to-end latency",
            "How long does a message take from reaching an ingress node to being written to a "
            "subscriber's socket (p50 and p99, all nodes)?",
            Query(quantile(0.5, m.INGRESS_END_TO_END_SECONDS), "p50"),
            Query(quantile(0.99, m.INGRESS_END_TO_END_SECONDS), "p99"),
            unit="s",
        ),
        timeseries(
            "Agent consumer lag per topic",
            "Are the agents keeping up with their input, or is a backlog growing on a topic?",
            Query(f"sum by (topic) ({m.AGENT_CONSUMER_LAG})", "{{topic}}"),
        ),
        timeseries(
            "Errors and refusals",
            "Is anything failing or being refused: Kafka writes, dead letters, authentication, "
            "ACL, limits, protocol errors (per second)?",
            Query(rate_sum(m.INGRESS_PRODUCE_FAILURES), "Kafka produce failures"),
            Query(rate_sum(m.AGENT_DEAD_LETTERS), "dead letters"),
            Query(rate_sum(m.AUTH_FAILURES), "auth failures"),
            Query(rate_sum(m.ACL_DENIED), "ACL denied"),
            Query(rate_sum(m.LIMIT_REFUSALS), "limit refusals"),
            Query(rate_sum(m.INGRESS_PROTOCOL_ERRORS), "protocol errors"),
            unit="ops",
        ),
    ]
    return assemble(
        UID,
        TITLE,
        "Bayou as a whole: nodes and workers up, messages in and out, latency, lag, errors.",
        panels,
    )
