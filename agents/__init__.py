"""Bayou agents: what a data team imports to write agents, from this one place.

``from agents import App, Context, Tumbling, Mean, Threshold, AlertRule, run_app`` — an app, its
agents bound to MQTT topic patterns, windows and their reducers, alert rules, tables and global
tables, commands back to devices (and the status of those expecting a response), and the
broker-free test helper. The runtime that runs them (``agents.runtime``) is private.

Note: ``agents`` is also the import name of OpenAI's Agents SDK; the two cannot share one
environment. In a Bayou environment ``from agents import ...`` finds this package.
"""

from agents.alerting import Absence, Alerter, AlertEvent, AlertRule, RateOfChange, Threshold
from agents.app import App, AppError, Context, Out, Output, Table, load_apps
from agents.commands import command_statuses
from agents.global_tables import GlobalTable
from agents.reducers import (
    Count,
    FromValues,
    Last,
    Max,
    Mean,
    Min,
    Percentile,
    Reducer,
    ReducerLike,
    Sum,
    aggregate,
    percentile,
)
from agents.testing import run_app
from agents.windowing import Hopping, Session, Tumbling, WindowedAggregator, WindowResult

__all__ = [
    "Absence",
    "AlertEvent",
    "AlertRule",
    "Alerter",
    "App",
    "AppError",
    "Context",
    "Count",
    "FromValues",
    "GlobalTable",
    "Hopping",
    "Last",
    "Max",
    "Mean",
    "Min",
    "Out",
    "Output",
    "Percentile",
    "RateOfChange",
    "Reducer",
    "ReducerLike",
    "Session",
    "Sum",
    "Table",
    "Threshold",
    "Tumbling",
    "WindowResult",
    "WindowedAggregator",
    "aggregate",
    "command_statuses",
    "load_apps",
    "percentile",
    "run_app",
]
