"""Every metric name the dashboards query (dashboards.metrics) is one Bayou exposes.

Nothing is started: importing ingress.metrics and agents.runtime.metrics registers their
collectors with prometheus_client's default registry, whose names are compared here with the
dashboards' names (counters as exposed, with ``_total``). A name the metrics contract adds
but the code does not have yet goes into PENDING, xfail(strict): the test flips to a failure
when the metric lands, so the entry must then be removed.
"""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

import agents.runtime.metrics
import ingress.metrics
from dashboards import metrics

assert ingress.metrics and agents.runtime.metrics  # imported for their registrations

# name -> reason; empty since the contract's NEW and CHANGE metrics landed (commit 2b2de48).
PENDING: dict[str, str] = {}


def _exposed() -> dict[str, str]:
    """Exposed metric name -> type, for every collector in the default registry."""
    out: dict[str, str] = {}
    for family in REGISTRY.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        out[name] = family.type
    return out


def _param(name: str) -> object:
    if name in PENDING:
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=PENDING[name]))
    return name


@pytest.mark.parametrize("name", [_param(n) for n in sorted(metrics.ALL)])
def test_the_name_is_exposed(name: str) -> None:
    exposed = _exposed()
    assert name in exposed, f"{name} is not registered by ingress.metrics or agents.runtime.metrics"
    want = "histogram" if name in metrics.HISTOGRAMS else exposed[name]
    assert exposed[name] == want, f"{name} is a {exposed[name]}, the dashboards read a {want}"


def test_every_histogram_is_named() -> None:
    assert metrics.HISTOGRAMS <= metrics.ALL
    assert {n for n, t in _exposed().items() if t == "histogram" and n.startswith("bayou_")} == (
        metrics.HISTOGRAMS
    )
