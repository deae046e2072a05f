"""Prometheus metrics of agent workers (names prefixed ``bayou_agent_``; dashboards read them).

The metric objects live at module level in the default registry, created once per process at
import, so starting a worker twice in one process (tests, ``bayou up`` restarts) never registers
a name twice.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Per app of agents.app (labels: the app's name and the name of its agent, window or alerter
# that acted; never a key or a topic, so the label sets stay bounded).
_APP = ["app", "agent"]

RECORDS_IN = Counter("bayou_agent_records_in", "Input records consumed by agent workers.")
DEAD_LETTERS = Counter(
    "bayou_agent_dead_letters", "Input records sent to the dead-letter topic.", ["agent"]
)
WINDOW_RESULTS = Counter("bayou_agent_window_results", "Closed-window results published.")
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
