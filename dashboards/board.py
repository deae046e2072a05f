"""A Bayou dashboard from its panels: the settings every Bayou dashboard shares."""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import dashboard as model

from dashboards import datasources

Panel = cogbuilder.Builder[model.Panel]


def variable(name: str, label: str, query: str) -> dash.QueryVariable:
    """A multi-value Prometheus variable (``All`` matches every value: use ``label=~"$name"``)."""
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(datasources.prometheus())
        .query(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def assemble(
    uid: str,
    title: str,
    description: str,
    panels: Sequence[Panel],
    variables: Sequence[dash.QueryVariable] = (),
    *,
    refresh: str = "30s",
    since: str = "now-1h",
) -> dash.Dashboard:
    """The dashboard ``uid``; panels numbered 1.. in order and laid out left to right."""
    board = (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["bayou"])
        .timezone("browser")
        .refresh(refresh)
        .time(since, "now")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
    )
    for v in variables:
        board = board.with_variable(v)
    for number, panel in enumerate(panels, start=1):
        built = panel.build()
        built.id_val = number
        board = board.with_panel(_Built(built))
    return board


class _Built(cogbuilder.Builder[model.Panel]):
    """A panel already built (numbered), handed to the dashboard builder as a builder."""

    def __init__(self, panel: model.Panel) -> None:
        self._panel = panel

    def build(self) -> model.Panel:
        return self._panel
