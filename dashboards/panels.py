"""Panel builders shared by the dashboards: one call per panel, with its question and queries.

Every panel states the question it answers (its description) and names its data source on
the panel and on each target, so a provisioned Grafana needs nothing but the two data sources
of :mod:`dashboards.provisioning`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import prometheus as prom_builders
from grafana_foundation_sdk.builders import stat as stat_builders
from grafana_foundation_sdk.builders import table as table_builders
from grafana_foundation_sdk.builders import timeseries as ts_builders
from grafana_foundation_sdk.models.dashboard import DataTransformerConfig
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from dashboards import datasources
from dashboards.mqtt_query import Mqtt


@dataclass(frozen=True)
class Query:
    """One PromQL target: the expression and the series' legend (``{{label}}`` placeholders)."""

    expr: str
    legend: str = "__auto"


def _ref(i: int) -> str:
    return chr(ord("A") + i)


def _prometheus_targets(
    queries: Sequence[Query], *, table: bool = False
) -> list[prom_builders.Dataquery]:
    targets = []
    for i, q in enumerate(queries):
        t = (
            prom_builders.Dataquery()
            .expr(q.expr)
            .legend_format(q.legend)
            .ref_id(_ref(i))
            .datasource(datasources.prometheus())
        )
        if table:  # the latest value per series, one row each
            t = t.instant().format(PromQueryFormat.TABLE)
        targets.append(t)
    return targets


def timeseries(
    title: str,
    question: str,
    *queries: Query,
    unit: str = "short",
    width: int = 12,
    height: int = 8,
) -> ts_builders.Panel:
    """A time series panel of Prometheus queries."""
    panel = (
        ts_builders.Panel()
        .title(title)
        .description(question)
        .datasource(datasources.prometheus())
        .unit(unit)
        .span(width)
        .height(height)
    )
    return panel.targets(list(_prometheus_targets(queries)))


def stat(
    title: str,
    question: str,
    *queries: Query,
    unit: str = "short",
    width: int = 6,
    height: int = 4,
) -> stat_builders.Panel:
    """A single-value panel (the last value of each query)."""
    panel = (
        stat_builders.Panel()
        .title(title)
        .description(question)
        .datasource(datasources.prometheus())
        .unit(unit)
        .span(width)
        .height(height)
    )
    return panel.targets(list(_prometheus_targets(queries)))


def table(
    title: str,
    question: str,
    *queries: Query,
    unit: str = "short",
    width: int = 12,
    height: int = 8,
) -> table_builders.Panel:
    """A table of the latest value of each series (instant queries)."""
    panel = (
        table_builders.Panel()
        .title(title)
        .description(question)
        .datasource(datasources.prometheus())
        .unit(unit)
        .span(width)
        .height(height)
    )
    return panel.targets(list(_prometheus_targets(queries, table=True)))


def _mqtt_targets(topics: Sequence[str]) -> list[Mqtt]:
    return [Mqtt(topic).ref_id(_ref(i)) for i, topic in enumerate(topics)]


def live_timeseries(
    title: str,
    question: str,
    *topics: str,
    hide: Sequence[str] = (),
    unit: str = "short",
    width: int = 12,
    height: int = 8,
) -> ts_builders.Panel:
    """A time series of the JSON fields of messages on MQTT topic filters, as they arrive;
    the fields named in ``hide`` are left out (Grafana's "organize" transformation)."""
    panel = (
        ts_builders.Panel()
        .title(title)
        .description(question)
        .datasource(datasources.mqtt())
        .unit(unit)
        .span(width)
        .height(height)
    )
    if hide:
        panel = panel.with_transformation(
            DataTransformerConfig(
                id_val="organize", options={"excludeByName": {name: True for name in hide}}
            )
        )
    return panel.targets(list(_mqtt_targets(topics)))


def live_table(
    title: str, question: str, *topics: str, width: int = 12, height: int = 8
) -> table_builders.Panel:
    """A table of the messages arriving on MQTT topic filters, one row per message."""
    panel = (
        table_builders.Panel()
        .title(title)
        .description(question)
        .datasource(datasources.mqtt())
        .span(width)
        .height(height)
    )
    return panel.targets(list(_mqtt_targets(topics)))
