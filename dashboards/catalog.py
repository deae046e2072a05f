"""Every Bayou dashboard, by uid: what ``bayou dashboards build`` writes and ``push`` sends."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dashboards import agent_workers, fleet, ingress_nodes, overview

BUILDERS: dict[str, Callable[[], Dashboard]] = {
    overview.UID: overview.build,
    ingress_nodes.UID: ingress_nodes.build,
    agent_workers.UID: agent_workers.build,
    fleet.UID: fleet.build,
}


def dashboard_json(uid: str) -> dict[str, Any]:
    """The Grafana JSON model of dashboard ``uid`` (plain dicts and lists)."""
    model = BUILDERS[uid]().build()
    data: dict[str, Any] = json.loads(json.dumps(model, cls=JSONEncoder))
    return data


def all_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard's JSON model, by uid."""
    return {uid: dashboard_json(uid) for uid in BUILDERS}
