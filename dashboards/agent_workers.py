"""The "Bayou agents" dashboard: per app and agent, chosen with the ``app``/``agent`` variables."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from dashboards import metrics as m
from dashboards.board import assemble, variable
from dashboards.panels import Query, timeseries
from dashboards.promql import quantile, rate_sum

UID = "bayou-agents"
TITLE = "Bayou agents"
AGENT = 'app=~"$app", agent=~"$agent"'
APP = 'app=~"$app"'
LEGEND = "{{app}}.{{agent}}"


def _rate(name: str, by: str = "app, agent") -> str:
    return rate_sum(name, by, AGENT)


def build() -> Dashboard:
    """The agents dashboard: one series per app and agent."""
    panels = [
        timeseries(
            "Records in",
            "How many records per second does each agent take?",
            Query(_rate(m.AGENT_RECORDS_IN), LEGEND),
            unit="ops",
        ),
        timeseries(
            "Batch latency",
            "How long does a worker take for one input batch (logic, produce, state, commit), "
            "p50 and p99?",
            Query(quantile(0.5, m.AGENT_BATCH_SECONDS, "instance"), "{{instance}} p50"),
            Query(quantile(0.99, m.AGENT_BATCH_SECONDS, "instance"), "{{instance}} p99"),
            unit="s",
        ),
        timeseries(
            "Dead letters by reason",
            "Which records does an agent send to bayou.deadletter, and why?",
            Query(_rate(m.AGENT_DEAD_LETTERS, "app, agent, reason"), LEGEND + " {{reason}}"),
            unit="ops",
        ),
        timeseries(
            "Alerts fired / resolved",
            "How often do the alerters fire and resolve?",
            Query(_rate(m.AGENT_ALERTS_FIRED), LEGEND + " fired"),
            Query(_rate(m.AGENT_ALERTS_RESOLVED), LEGEND + " resolved"),
            unit="ops",
        ),
        timeseries(
            "Commands sent",
            "How many commands per second do the agents send back to devices (acknowledged by "
            "Kafka)?",
            Query(_rate(m.AGENT_COMMANDS_SENT), LEGEND),
            unit="ops",
        ),
        timeseries(
            "Window results and late events",
            "How many windows close per second, and how many readings arrive too late for "
            "their window?",
            Query(_rate(m.AGENT_WINDOW_RESULTS), LEGEND + " results"),
            Query(_rate(m.AGENT_LATE_EVENTS), LEGEND + " late"),
            unit="ops",
        ),
        timeseries(
            "Consumer lag per topic-partition",
            "How many records behind the high watermark is each input partition?",
            Query(
                f"max by (topic, partition) ({m.AGENT_CONSUMER_LAG})", "{{topic}}[{{partition}}]"
            ),
        ),
        timeseries(
            "Command latency per device group",
            "How long from a device's publish reaching Bayou to Kafka acknowledging the command "
            "it caused, per device group (p50, p99)?",
            Query(
                quantile(0.5, m.AGENT_COMMAND_LATENCY_SECONDS, "app, group", APP),
                "{{app}} {{group}} p50",
            ),
            Query(
                quantile(0.99, m.AGENT_COMMAND_LATENCY_SECONDS, "app, group", APP),
                "{{app}} {{group}} p99",
            ),
            unit="s",
        ),
        timeseries(
            "Commands with a response: statuses",
            "Of the commands that expect a response, how many per second reach each status "
            "(sent, delivered, acknowledged, refused, timed_out), and how many are waiting?",
            Query(rate_sum(m.AGENT_COMMANDS, "app, status", APP), "{{app}} {{status}}"),
            Query(f"sum by (app) ({m.AGENT_COMMANDS_PENDING}{{{APP}}})", "{{app}} pending"),
        ),
        timeseries(
            "Commands with a response: time to answer",
            "How long from a command being sent to the device's response (p50, p99)?",
            Query(quantile(0.5, m.AGENT_COMMAND_RESPONSE_SECONDS, "app", APP), "{{app}} p50"),
            Query(quantile(0.99, m.AGENT_COMMAND_RESPONSE_SECONDS, "app", APP), "{{app}} p99"),
            unit="s",
        ),
        timeseries(
            "Webhooks",
            "Do the agents' webhook calls succeed, fail after the last try, or need retries?",
            Query(_rate(m.AGENT_WEBHOOK_OK), LEGEND + " ok"),
            Query(_rate(m.AGENT_WEBHOOK_FAILED), LEGEND + " failed"),
            Query(_rate(m.AGENT_WEBHOOK_RETRIES), LEGEND + " retries"),
            unit="ops",
        ),
        timeseries(
            "Workers and partitions",
            "Which workers are ready, and how many input partitions does each hold?",
            Query(f"sum by (instance) ({m.AGENT_READY})", "{{instance}} ready"),
            Query(f"sum by (instance) ({m.AGENT_ASSIGNED_PARTITIONS})", "{{instance}} partitions"),
        ),
    ]
    apps = variable("app", "App", f"label_values({m.AGENT_RECORDS_IN}, app)")
    agents = variable("agent", "Agent", f"label_values({m.AGENT_RECORDS_IN}{{{APP}}}, agent)")
    return assemble(
        UID,
        TITLE,
        "The agent apps: records, batches, dead letters, alerts, commands, windows, lag and "
        "command latency.",
        panels,
        [apps, agents],
    )
