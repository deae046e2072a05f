"""The metric names the dashboards query, as Prometheus exposes them.

The names come from the metrics contract (docs/dashboards.md, "Metrics"): counters with their
``_total`` suffix, histograms by their base name (queries add ``_bucket``, ``_sum``,
``_count``). This module only names them: the dashboards never import ``ingress`` or
``agents`` (tests/test_dashboards_metrics.py checks each name against their registries).
"""

from __future__ import annotations

from typing import Final

# Ingress node (every node; Prometheus adds `instance`).
INGRESS_READY: Final = "bayou_ingress_ready"
INGRESS_CONNECTIONS: Final = "bayou_ingress_connections"
INGRESS_CONNECTS: Final = "bayou_ingress_connects_total"
INGRESS_MESSAGES_IN: Final = "bayou_ingress_messages_in_total"  # kafka_topic, qos
INGRESS_MESSAGES_OUT: Final = "bayou_ingress_messages_out_total"  # kafka_topic, qos
INGRESS_BYTES_IN: Final = "bayou_ingress_bytes_in_total"
INGRESS_BYTES_OUT: Final = "bayou_ingress_bytes_out_total"
INGRESS_PRODUCE_SECONDS: Final = "bayou_ingress_kafka_produce_seconds"  # histogram
INGRESS_END_TO_END_SECONDS: Final = "bayou_ingress_end_to_end_seconds"  # histogram
INGRESS_PRODUCE_FAILURES: Final = "bayou_ingress_produce_failures_total"
INGRESS_SUBSCRIPTIONS: Final = "bayou_ingress_subscriptions"
INGRESS_SESSIONS_STORED: Final = "bayou_ingress_sessions_stored"
INGRESS_SESSIONS_CREATED: Final = "bayou_ingress_sessions_created_total"
INGRESS_SESSIONS_RESUMED: Final = "bayou_ingress_sessions_resumed_total"
INGRESS_SESSIONS_EXPIRED: Final = "bayou_ingress_sessions_expired_total"
INGRESS_SHARED_GROUPS: Final = "bayou_ingress_shared_groups"
INGRESS_SHARED_PARTITIONS: Final = "bayou_ingress_shared_partitions"
INGRESS_SHARED_REDELIVERED: Final = "bayou_ingress_shared_redelivered_total"
INGRESS_RETAINED: Final = "bayou_ingress_retained_messages"
INGRESS_CATCH_UPS: Final = "bayou_ingress_catch_ups_total"
INGRESS_REPLAYED: Final = "bayou_ingress_replayed_messages_total"
INGRESS_WILLS: Final = "bayou_ingress_wills_sent_total"
INGRESS_COMMAND_EVENTS: Final = "bayou_ingress_command_events_total"  # kind
INGRESS_TAKEOVERS: Final = "bayou_ingress_takeovers_total"
INGRESS_DUPLICATES_DROPPED: Final = "bayou_ingress_duplicate_results_dropped_total"
INGRESS_PROTOCOL_ERRORS: Final = "bayou_ingress_protocol_errors_total"  # kind
AUTH_FAILURES: Final = "bayou_auth_failures_total"  # reason
ACL_DENIED: Final = "bayou_acl_denied_total"  # action
LIMIT_REFUSALS: Final = "bayou_limit_refusals_total"  # limit

# Agent worker.
AGENT_READY: Final = "bayou_agent_ready"
AGENT_ASSIGNED_PARTITIONS: Final = "bayou_agent_assigned_partitions"
AGENT_RECORDS_IN: Final = "bayou_agent_records_in_total"  # app, agent
AGENT_BATCH_SECONDS: Final = "bayou_agent_batch_seconds"  # histogram
AGENT_DEAD_LETTERS: Final = "bayou_agent_dead_letters_total"  # app, agent, reason
AGENT_WINDOW_RESULTS: Final = "bayou_agent_window_results_total"  # app, agent
AGENT_LATE_EVENTS: Final = "bayou_agent_late_events_total"  # app, agent
AGENT_ALERTS_FIRED: Final = "bayou_agent_app_alerts_fired_total"  # app, agent
AGENT_ALERTS_RESOLVED: Final = "bayou_agent_app_alerts_resolved_total"  # app, agent
AGENT_COMMANDS_SENT: Final = "bayou_agent_app_commands_sent_total"  # app, agent
AGENT_WEBHOOK_OK: Final = "bayou_agent_app_webhook_calls_ok_total"  # app, agent
AGENT_WEBHOOK_FAILED: Final = "bayou_agent_app_webhook_calls_failed_total"  # app, agent
AGENT_WEBHOOK_RETRIES: Final = "bayou_agent_app_webhook_retries_total"  # app, agent
AGENT_CONSUMER_LAG: Final = "bayou_agent_consumer_lag"  # topic, partition
# app, group; histogram
AGENT_COMMAND_LATENCY_SECONDS: Final = "bayou_agent_command_latency_seconds"
# Closed-loop commands (the command tracker).
AGENT_COMMANDS: Final = "bayou_agent_commands_total"  # app, status
AGENT_COMMANDS_PENDING: Final = "bayou_agent_commands_pending"  # app
AGENT_COMMAND_RESPONSE_SECONDS: Final = "bayou_agent_command_response_seconds"  # app; histogram

HISTOGRAMS: Final = frozenset(
    {
        INGRESS_PRODUCE_SECONDS,
        INGRESS_END_TO_END_SECONDS,
        AGENT_BATCH_SECONDS,
        AGENT_COMMAND_LATENCY_SECONDS,
        AGENT_COMMAND_RESPONSE_SECONDS,
    }
)
"""The histograms: a query reads ``<name>_bucket``, ``<name>_sum`` or ``<name>_count``."""

ALL: Final = frozenset(
    value for name, value in list(globals().items()) if name.isupper() and isinstance(value, str)
)
"""Every metric name above."""


def series_names() -> frozenset[str]:
    """Every series name a PromQL expression may use: the names, and each histogram's
    ``_bucket``, ``_sum`` and ``_count``."""
    return ALL | {h + suffix for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
