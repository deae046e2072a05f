"""Prometheus metrics of an ingress node, counted along the data path (in, Kafka, out, state).

Names are the contract dashboards read: they stay when modules or words change.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# No ``*_created`` series (one more gauge per counter and histogram child: its creation time):
# a process exposes the contract's metrics only (docs/dashboards.md#metrics).
disable_created_metrics()  # type: ignore[no-untyped-call]

CONNECTIONS = Gauge("bayou_ingress_connections", "MQTT connections currently open")
CONNECTS_TOTAL = Counter("bayou_ingress_connects_total", "CONNECTs accepted")
PROTOCOL_ERRORS_TOTAL = Counter(
    "bayou_ingress_protocol_errors_total", "Connections closed for breaking MQTT, by kind", ["kind"]
)
MESSAGES_IN_TOTAL = Counter(
    "bayou_ingress_messages_in_total",
    "PUBLISH packets received (and wills published), by the Kafka topic routed to and QoS",
    ["kafka_topic", "qos"],
)
MESSAGES_OUT_TOTAL = Counter(
    "bayou_ingress_messages_out_total",
    "PUBLISH packets sent to subscribers (live and catch-up; not resends), by the Kafka topic "
    "the record was read from and the QoS sent at",
    ["kafka_topic", "qos"],
)
BYTES_IN_TOTAL = Counter(
    "bayou_ingress_bytes_in", "Bytes read from MQTT clients (TCP, TLS, WebSocket payloads)"
)
BYTES_OUT_TOTAL = Counter("bayou_ingress_bytes_out", "Bytes written to MQTT clients")
PRODUCE_FAILURES_TOTAL = Counter(
    "bayou_ingress_produce_failures_total", "Kafka writes that failed (no PUBACK was sent)"
)
PRODUCE_LATENCY = Histogram(
    "bayou_ingress_kafka_produce_seconds",
    "Time from receiving a PUBLISH to Kafka acknowledging it",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
END_TO_END_LATENCY = Histogram(
    "bayou_ingress_end_to_end_seconds",
    "From bayou.ingress_ts (first receipt) to delivery to a subscriber on this node",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SUBSCRIPTIONS = Gauge("bayou_ingress_subscriptions", "Active subscriptions on this node")
READY = Gauge("bayou_ingress_ready", "1 once the node accepts MQTT and consumes its topics")
RETAINED = Gauge("bayou_ingress_retained_messages", "Retained messages materialised on this node")
WILLS_TOTAL = Counter("bayou_ingress_wills_sent_total", "Will messages published")
# kind: "delivered" (a client acknowledged a command's PUBLISH), "refused" (an MQTT 5 client
# refused it) or "acknowledged" (a client published a command's response): events written to
# bayou.commands (ingress.contract.commands).
COMMAND_EVENTS = Counter(
    "bayou_ingress_command_events",
    "Closed-loop command events this node wrote to bayou.commands, by kind.",
    ["kind"],
)
for _kind in ("delivered", "refused", "acknowledged"):
    COMMAND_EVENTS.labels(_kind)
TAKEOVERS_TOTAL = Counter(
    "bayou_ingress_takeovers_total", "Connections closed because their client id connected again"
)
SESSIONS_STORED = Gauge("bayou_ingress_sessions_stored", "Persistent sessions known to this node")
SESSIONS_RESUMED_TOTAL = Counter(
    "bayou_ingress_sessions_resumed_total", "Connections that resumed a stored session"
)
SESSIONS_EXPIRED_TOTAL = Counter(
    "bayou_ingress_sessions_expired_total",
    "MQTT 5 sessions deleted after their Session Expiry Interval (by this node)",
)
SHARED_GROUPS = Gauge(
    "bayou_ingress_shared_groups",
    "Shared subscriptions ($share/{group}/{filter}) with members on this node; each is a "
    "member of its Kafka consumer group",
)
SHARED_PARTITIONS = Gauge(
    "bayou_ingress_shared_partitions",
    "Delivery-topic partitions this node serves for shared subscriptions (summed over them)",
)
SHARED_REDELIVERED_TOTAL = Counter(
    "bayou_ingress_shared_redelivered_total",
    "QoS 1 messages of a shared subscription sent to another member because the member they "
    "were in flight to went away",
)
SESSIONS_CREATED_TOTAL = Counter(
    "bayou_ingress_sessions_created_total", "Persistent sessions created"
)
# The metric's name predates the word "catch-up" and is kept: dashboards read it.
CATCH_UP_SENT_TOTAL = Counter(
    "bayou_ingress_replayed_messages_total",
    "Messages sent from Kafka to connections catching up (resumed sessions, full windows)",
)
CATCH_UPS_TOTAL = Counter(
    "bayou_ingress_catch_ups_total",
    "Times a connection was brought up to date from Kafka (resumed session or full window)",
)
DUPLICATES_DROPPED_TOTAL = Counter(
    "bayou_ingress_duplicate_results_dropped_total",
    "Agent results not delivered because another record carried the same bayou.result_id",
)

# Refusals, by a fixed set of label values (never client input): see docs/security.md.
AUTH_FAILURES_TOTAL = Counter(
    "bayou_auth_failures_total", "CONNECTs refused by authentication, by reason", ["reason"]
)
ACL_DENIED_TOTAL = Counter(
    "bayou_acl_denied_total",
    "Operations the ACL denied, by action (publish, subscribe, receive, will)",
    ["action"],
)
LIMIT_REFUSALS_TOTAL = Counter(
    "bayou_limit_refusals_total", "Connections, packets or messages refused by a limit", ["limit"]
)


# Labelled children cached: labels() per message cost ~10 % of a core. Kafka topics are the
# route topics and bayou.outbound: a few.
_in_children: dict[tuple[str, int], Counter] = {}
_out_children: dict[tuple[str, int], Counter] = {}


def count_in(kafka_topic: str, qos: int, n: int = 1) -> None:
    """``n`` PUBLISH packets (or wills) routed to ``kafka_topic``."""
    child = _in_children.get((kafka_topic, qos))
    if child is None:
        child = _in_children[(kafka_topic, qos)] = MESSAGES_IN_TOTAL.labels(kafka_topic, str(qos))
    if n:
        child.inc(n)


def count_out(sent: dict[str, list[int]], create: bool = False) -> None:
    """PUBLISH packets sent, per Kafka topic read from: counts by QoS 0, 1, 2 (``create``: make
    the series of zero counts too)."""
    for topic, by_qos in sent.items():
        for qos, n in enumerate(by_qos):
            if n or create:
                child = _out_children.get((topic, qos))
                if child is None:
                    child = MESSAGES_OUT_TOTAL.labels(topic, str(qos))
                    _out_children[(topic, qos)] = child
                child.inc(n)


# The fixed label values of the refusal counters, so every series exists (at 0) from the
# start: a dashboard shows 0, not "no data", and rate() works from the first event.
# receive_maximum: an MQTT 5 client sent more unacknowledged QoS 1/2 publishes than allowed.
PROTOCOL_ERROR_KINDS = ("malformed", "unsupported_protocol", "identifier_rejected",
                        "keepalive_timeout", "receive_maximum")  # fmt: skip
LIMITS = ("max_connections", "connect_rate", "connect_timeout", "write_buffer",
          "max_subscriptions", "publish_rate", "max_payload")  # fmt: skip


def init_label_values(route_topics: list[str], delivery_topics: list[str]) -> None:
    """Create every fixed-label series of the refusal counters (auth and ACL: the guard), and
    the messages in and out of the node's Kafka topics at every QoS: a series that appears
    with its first count already in it shows no rate() for that count."""
    for topic in route_topics:
        for qos in (0, 1, 2):
            count_in(topic, qos, 0)
    count_out({topic: [0, 0, 0] for topic in delivery_topics}, create=True)
    for kind in PROTOCOL_ERROR_KINDS:
        PROTOCOL_ERRORS_TOTAL.labels(kind)
    for limit in LIMITS:
        LIMIT_REFUSALS_TOTAL.labels(limit)
