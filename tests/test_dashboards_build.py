"""The dashboards as built: the four dashboards, their panels and queries, the provisioning
files, and the committed ``dashboards/generated/`` being what a build writes today."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import metrics
from dashboards.build import build, render
from dashboards.provisioning import MQTT_PASSWORD_ENV, Sources

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "dashboards" / "generated"
EXPECTED = {
    "bayou-overview": "Bayou overview",
    "bayou-ingress": "Bayou ingress",
    "bayou-agents": "Bayou agents",
    "bayou-fleet": "Fleet",
}
SOURCES = {"bayou-prometheus": "prometheus", "bayou-mqtt": "grafana-mqtt-datasource"}
NAME = re.compile(r"\bbayou_[a-z0-9_]+")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    build(out)
    return out


@pytest.fixture(scope="module")
def boards(built: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted((built / "dashboards").glob("*.json")):
        data = json.loads(path.read_text())
        assert path.stem == data["uid"], f"{path.name} holds dashboard {data['uid']}"
        out[data["uid"]] = data
    return out


def _panels(boards: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(uid, p) for uid, b in boards.items() for p in b["panels"]]


def test_the_four_dashboards(boards: dict[str, dict[str, Any]]) -> None:
    assert {uid: b["title"] for uid, b in boards.items()} == EXPECTED
    for b in boards.values():
        assert b["panels"], b["uid"]
        ids = [p["id"] for p in b["panels"]]
        assert len(ids) == len(set(ids)), f"{b['uid']}: panel ids repeat"


def test_every_panel_has_a_datasource_a_question_and_queries(
    boards: dict[str, dict[str, Any]],
) -> None:
    for uid, p in _panels(boards):
        where = f"{uid} panel {p.get('title')!r}"
        ds = p.get("datasource") or {}
        assert ds.get("uid") in SOURCES, where
        assert ds.get("type") == SOURCES[ds["uid"]], where
        assert p.get("description", "").strip(), f"{where} has no description"
        assert p.get("targets"), f"{where} has no targets"
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, f"{where} leaves the grid"
        for t in p["targets"]:
            assert t["datasource"] == ds, f"{where}: a target of another data source"
            field = "expr" if ds["uid"] == "bayou-prometheus" else "topic"
            assert str(t.get(field, "")).strip(), f"{where}: a target with no {field}"
            assert t.get("refId"), where


def test_promql_uses_only_the_names_in_dashboards_metrics(
    boards: dict[str, dict[str, Any]],
) -> None:
    known = metrics.series_names()
    exprs = [t["expr"] for _, p in _panels(boards) for t in p["targets"] if "expr" in t]
    exprs += [v["query"] for b in boards.values() for v in b["templating"].get("list", [])]
    assert exprs
    for expr in exprs:
        names = set(NAME.findall(expr))
        assert names, f"no Bayou metric in {expr!r}"
        assert names <= known, f"{sorted(names - known)} in {expr!r} are not in dashboards.metrics"


def test_the_variables(boards: dict[str, dict[str, Any]]) -> None:
    def variables(uid: str) -> dict[str, str]:
        return {v["name"]: v["query"] for v in boards[uid]["templating"].get("list", [])}

    assert variables("bayou-ingress") == {"instance": "label_values(bayou_ingress_ready, instance)"}
    assert set(variables("bayou-agents")) == {"app", "agent"}
    for uid, p in _panels(boards):
        for t in p["targets"]:
            for name in re.findall(r"\$(\w+)", t.get("expr", "")):
                assert name == "__rate_interval" or name in variables(uid), (uid, t["expr"])


def test_fleet_reads_the_demo_topics_live(boards: dict[str, dict[str, Any]]) -> None:
    fleet = boards["bayou-fleet"]["panels"]
    topics = {t["topic"] for p in fleet for t in p["targets"] if "topic" in t}
    assert topics == {"sensors/+/stats", "alerts/+"}
    prom = " ".join(t["expr"] for p in fleet for t in p["targets"] if "expr" in t)
    for name in ("alerts_fired", "commands_sent", "command_latency_seconds", "dead_letters"):
        assert f"bayou_agent_{name}" in prom or f"bayou_agent_app_{name}" in prom, name


def test_provisioning_files(built: Path) -> None:
    sources = yaml.safe_load((built / "provisioning/datasources/bayou.yaml").read_text())
    by_uid = {d["uid"]: d for d in sources["datasources"]}
    assert {uid: d["type"] for uid, d in by_uid.items()} == SOURCES
    mqtt = by_uid["bayou-mqtt"]
    assert mqtt["jsonData"] == {"uri": "tcp://localhost:1883", "username": "grafana"}
    assert mqtt["secureJsonData"] == {"password": f"${MQTT_PASSWORD_ENV}"}
    assert by_uid["bayou-prometheus"]["url"] == "http://localhost:9090"
    provider = yaml.safe_load((built / "provisioning/dashboards/bayou.yaml").read_text())
    (only,) = provider["providers"]
    assert only["type"] == "file" and only["folder"] == "Bayou" and only["options"]["path"]


def test_the_sources_are_parameters() -> None:
    files = render(Sources("http://prom:9090", "ws://bayou:8083", "viewer", "grafana-1"))
    sources = yaml.safe_load(files["provisioning/datasources/bayou.yaml"])
    by_uid = {d["uid"]: d for d in sources["datasources"]}
    assert by_uid["bayou-prometheus"]["url"] == "http://prom:9090"
    assert by_uid["bayou-mqtt"]["jsonData"] == {
        "uri": "ws://bayou:8083",
        "username": "viewer",
        "clientID": "grafana-1",
    }


def test_the_output_is_stable() -> None:
    first, second = render(Sources()), render(Sources())
    assert first == second
    for path, text in first.items():
        assert text.endswith("\n") and not text.endswith("\n\n"), path
        if path.endswith(".json"):
            assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n", path


def test_generated_is_not_stale(built: Path) -> None:
    """The committed dashboards/generated/ is byte for byte what a build writes now."""
    hint = "dashboards/generated/ is stale: run `bayou dashboards build` and commit the result"
    fresh = {p.relative_to(built): p.read_bytes() for p in built.rglob("*") if p.is_file()}
    committed = {
        p.relative_to(GENERATED): p.read_bytes() for p in GENERATED.rglob("*") if p.is_file()
    }
    assert sorted(committed) == sorted(fresh), hint
    for path, data in fresh.items():
        assert committed[path] == data, f"{path}: {hint}"


def _bayou(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bayou.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )


def test_bayou_dashboards_build(tmp_path: Path) -> None:
    """The command (a real process): writes the files; bad input exits 2 naming the option."""
    ok = _bayou("dashboards", "build", "--out", str(tmp_path), "--mqtt-uri", "ws://b:8083")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "dashboards" / "bayou-fleet.json").is_file()
    assert "ws://b:8083" in (tmp_path / "provisioning/datasources/bayou.yaml").read_text()
    for option, value in (
        ("--mqtt-uri", "http://bayou:1883"),
        ("--prometheus-url", "prometheus:9090"),
        ("--mqtt-username", ""),
    ):
        bad = _bayou("dashboards", "build", "--out", str(tmp_path / "x"), option, value)
        assert bad.returncode == 2 and option in bad.stderr, (option, bad.stderr)
    assert not (tmp_path / "x").exists()


def test_docs_list_every_panel(boards: dict[str, dict[str, Any]]) -> None:
    """docs/dashboards.md has each panel's row (title and question), as the code has it."""
    docs = (ROOT / "docs" / "dashboards.md").read_text()
    for uid, p in _panels(boards):
        assert f"| {p['title']} |" in docs and p["description"] in docs, (
            f"{uid} panel {p['title']!r} is not in docs/dashboards.md ## Dashboards as built"
        )
