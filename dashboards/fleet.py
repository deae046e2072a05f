"""The "Fleet" dashboard: the demo pipeline per device, live over MQTT, and its totals.

Per-device data never becomes a Prometheus label (the metrics contract: bounded cardinality),
so the device panels subscribe to Bayou itself through the Grafana MQTT data source: the
demo's window stats on ``sensors/+/stats`` and alerts on ``alerts/+`` (agents/demo.py). The
totals (alerts, commands, command latency per device group, dead letters) are Prometheus's.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from dashboards import metrics as m
from dashboards.board import assemble
from dashboards.panels import Query, live_table, live_timeseries, timeseries
from dashboards.promql import quantile, rate_sum

UID = "bayou-fleet"
TITLE = "Fleet"
DEMO = 'app="demo"'
"""The demo app's name (agents/demo.py APP_NAME; dashboards do not import agents)."""
STATS_TOPIC = "sensors/+/stats"
ALERTS_TOPIC = "alerts/+"


def build() -> Dashboard:
    """The Fleet dashboard: live per-device panels first, then the demo app's metrics."""
    panels = [
        live_timeseries(
            "Window temperature per device (live)",
            "What are each device's latest 10-second window statistics (mean, min, max "
            "temperature), as the demo agent publishes them?",
            STATS_TOPIC,
            # Plot the temperatures only: the window bounds are epoch seconds, count a count.
            hide=("window_start", "window_end", "count"),
            unit="celsius",
        ),
        live_table(
            "Window stats (live)",
            "Which devices reported a window just now, with how many readings and what "
            "temperatures?",
            STATS_TOPIC,
        ),
        live_table(
            "Alerts (live)",
            "Which devices are too hot right now, at what temperature against which threshold?",
            ALERTS_TOPIC,
            width=24,
        ),
        timeseries(
            "Alerts fired",
            "How many temperature alerts per second does the demo fire?",
            Query(rate_sum(m.AGENT_ALERTS_FIRED, "agent", DEMO), "{{agent}}"),
            unit="ops",
            width=6,
        ),
        timeseries(
            "Commands sent",
            "How many cool commands per second go back to devices?",
            Query(rate_sum(m.AGENT_COMMANDS_SENT, "agent", DEMO), "{{agent}}"),
            unit="ops",
            width=6,
        ),
        timeseries(
            "Command latency p99 per device group",
            "How long do the slowest 1% of commands in each device group take, from the "
            "device's publish reaching Bayou to Kafka acknowledging the command?",
            Query(quantile(0.99, m.AGENT_COMMAND_LATENCY_SECONDS, "group", DEMO), "{{group}}"),
            unit="s",
            width=6,
        ),
        timeseries(
            "Dead letters",
            "Are devices sending readings the demo cannot use, and why?",
            Query(rate_sum(m.AGENT_DEAD_LETTERS, "reason", DEMO), "{{reason}}"),
            unit="ops",
            width=6,
        ),
    ]
    return assemble(
        UID,
        TITLE,
        "The demo fleet: each device's window stats and alerts live over MQTT, and the demo "
        "app's alerts, commands, command latency and dead letters from Prometheus.",
        panels,
        refresh="10s",
        since="now-15m",
    )
