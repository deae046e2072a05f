"""The names a data team imports from ``agents`` (pinned, as httpx and trio pin theirs): adding
or removing one is a decision, made here on purpose; and the docs import from nowhere else."""

from __future__ import annotations

import re
from pathlib import Path

import agents

EXPORTED = [
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

ROOT = Path(__file__).resolve().parent.parent


def test_the_exported_names_are_pinned_and_resolve() -> None:
    assert sorted(agents.__all__) == EXPORTED
    for name in agents.__all__:
        assert getattr(agents, name) is not None, name


def test_docs_and_examples_import_only_from_agents() -> None:
    sources = [
        ROOT / "docs" / "agents.md",
        *sorted((ROOT / "tests" / "agent_examples").glob("*.py")),
    ]
    for path in sources:
        deep = re.findall(r"^\s*(?:from|import) agents\.\w+", path.read_text(), re.M)
        assert deep == [], f"{path.name} imports {deep}: the public API is `from agents import`"
