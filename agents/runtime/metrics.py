"""Prometheus metrics of agent workers (names prefixed ``bayou_agent_``; dashboards read them).

The metric objects live at module level in the default registry, created once per process at
import, so starting a worker twice in one process (tests, ``bayou up`` restarts) never registers
a name twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Set

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# No ``*_created`` series (one more gauge per counter and histogram child: its creation time):
# a process exposes the contract's metrics only (docs/dashboards.md#metrics).
disable_created_metrics()  # type: ignore[no-untyped-call]

# Per app of agents.app (labels: the app's name and the name of its agent, window or alerter
# that acted; never a key or a topic, so the label sets stay bounded).
_APP = ["app", "agent"]

RECORDS_IN = Counter(
    "bayou_agent_records_in", "Input records an agent took (its topic and MQTT pattern).", _APP
)
# ``reason``: one of DEAD_LETTER_REASONS, never an exception's text.
DEAD_LETTERS = Counter(
    "bayou_agent_dead_letters",
    "Records sent to the dead-letter topic, by the agent, window or alerter and the reason.",
    [*_APP, "reason"],
)
DEAD_LETTER_REASONS = (
    "bad_key",  # the record key is not UTF-8
    "empty_value",  # a record without a value
    "invalid",  # not JSON, or not the agent's model
    "bad_event_time",  # the event-time field is not a finite number
    "agent_error",  # the agent raised
    "callback_error",  # a window's on_close or an alerter's on_event raised
    "webhook_failed",  # a webhook call failed its last try
)
WINDOW_RESULTS = Counter("bayou_agent_window_results", "Closed-window results published.", _APP)
LATE_EVENTS = Counter(
    "bayou_agent_late_events",
    "Readings dropped from a window because it had closed (event time + grace passed).",
    _APP,
)
BATCH_SECONDS = Histogram(
    "bayou_agent_batch_seconds",
    "Time to process one input batch: logic, produce and await outputs, state write, commit.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
READY = Gauge("bayou_agent_ready", "1 once the worker's consumer has its partition assignment.")
ASSIGNED_PARTITIONS = Gauge(
    "bayou_agent_assigned_partitions", "Input partitions assigned to this worker."
)
# Per assigned input partition only (bounded by the topics' partition counts); removed when
# the partition is revoked.
CONSUMER_LAG = Gauge(
    "bayou_agent_consumer_lag",
    "Records between the consumer's position and the partition's high watermark.",
    ["topic", "partition"],
)
COMMAND_LATENCY = Histogram(
    "bayou_agent_command_latency_seconds",
    "From the device's publish reaching the ingress (bayou.ingress_ts) to Kafka acknowledging "
    "the command it caused, by app and device group.",
    ["app", "group"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

# Closed-loop commands (agents.runtime.command_tracker), by the app that sent them: each command
# counts once per status it reaches (sent, delivered, acknowledged, refused, timed_out).
COMMANDS = Counter(
    "bayou_agent_commands",
    "Commands expecting a response that reached a status (sent, delivered, acknowledged, "
    "refused, timed_out), by the app that sent them; counted by the command tracker.",
    ["app", "status"],
)
COMMANDS_PENDING = Gauge(
    "bayou_agent_commands_pending",
    "Commands of the tracker's partitions on this worker not acknowledged, refused or timed "
    "out yet.",
    ["app"],
)
COMMAND_RESPONSE = Histogram(
    "bayou_agent_command_response_seconds",
    "From a command being sent to the device's response reaching the ingress, by app.",
    ["app"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)

APP_ALERTS_FIRED = Counter(
    "bayou_agent_app_alerts_fired", "Alerts an app's alerters fired (after de-duplication).", _APP
)
APP_ALERTS_RESOLVED = Counter(
    "bayou_agent_app_alerts_resolved", "Alerts an app's alerters resolved.", _APP
)
APP_COMMANDS_SENT = Counter(
    "bayou_agent_app_commands_sent", "Device commands (ctx.command) an app published.", _APP
)
APP_WEBHOOK_OK = Counter(
    "bayou_agent_app_webhook_calls_ok", "Webhook calls answered 2xx (after retries).", _APP
)
APP_WEBHOOK_FAILED = Counter(
    "bayou_agent_app_webhook_calls_failed",
    "Webhook calls that failed their last try and went to the dead-letter topic.",
    _APP,
)
APP_WEBHOOK_RETRIES = Counter(
    "bayou_agent_app_webhook_retries", "Webhook tries after a failed one.", _APP
)


class LagMetric:
    """Keeps ``bayou_agent_consumer_lag`` to the consumer's partitions: values at most once a
    second (the lag is read every batch; a scrape every few seconds needs no more), the series
    of a revoked partition removed at once."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._shown: set[tuple[str, int]] = set()
        self._at = float("-inf")

    def update(self, lag: dict[tuple[str, int], int], assigned: Set[tuple[str, int]]) -> None:
        """Show ``lag`` of the ``assigned`` partitions; drop the series of the others. An
        assigned partition missing from ``lag`` (position not known) keeps its last value."""
        gone = self._shown - assigned
        if gone:
            for t, p in gone:
                CONSUMER_LAG.remove(t, str(p))
            self._shown -= gone
        now = self._clock()
        if now - self._at < 1.0:
            return
        self._at = now
        for tp, n in lag.items():
            if tp in assigned:
                CONSUMER_LAG.labels(tp[0], str(tp[1])).set(n)
                self._shown.add(tp)

    def clear(self) -> None:
        """The worker stops: no partition is its own any more."""
        self.update({}, frozenset())
