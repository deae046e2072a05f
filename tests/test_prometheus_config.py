"""The shipped Prometheus configuration (dashboards/prometheus/) checked by promtool.

``promtool check config`` on prometheus.yml (which also checks the rule file it names),
``promtool check rules`` on rules.yml, and ``promtool test rules`` on rules_test.yml: every
recording and alerting rule against input series. A deliberately broken config and a broken
rule file must make promtool exit non-zero, or the passing checks above would prove nothing.
Also: the config :mod:`bayou.prometheus` writes is one promtool accepts.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from bayou.prometheus import JOB_INGRESS, JOB_WORKER, write_config
from tests import prometheus_fixture
from tests.prometheus_fixture import need_binary

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "dashboards" / "prometheus"


def promtool(*args: str | Path, cwd: Path = SHIPPED) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need_binary("promtool"), *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def test_shipped_config_passes_promtool_check_config() -> None:
    result = promtool("check", "config", SHIPPED / "prometheus.yml")
    _ok(result)
    # It found the rule file (relative to the config's directory) and checked it too.
    assert "1 rule files found" in result.stdout + result.stderr


def test_shipped_config_scrapes_the_default_ports() -> None:
    cfg = yaml.safe_load((SHIPPED / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in cfg["scrape_configs"]}
    assert jobs == {JOB_INGRESS: ["localhost:9464"], JOB_WORKER: ["localhost:9465"]}
    assert cfg["rule_files"] == ["rules.yml"]


def test_shipped_rules_pass_promtool_check_rules() -> None:
    _ok(promtool("check", "rules", SHIPPED / "rules.yml"))


def test_every_rule_has_a_promtool_unit_test() -> None:
    rules = yaml.safe_load((SHIPPED / "rules.yml").read_text())
    tests = (SHIPPED / "rules_test.yml").read_text()
    tested = yaml.safe_load(tests)["tests"]
    exprs = {e["expr"] for t in tested for e in t.get("promql_expr_test", [])}
    alerts = {a["alertname"] for t in tested for a in t.get("alert_rule_test", [])}
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                assert rule["record"] in exprs, f"no promql_expr_test for {rule['record']}"
            else:
                assert rule["alert"] in alerts, f"no alert_rule_test for {rule['alert']}"


def test_shipped_rules_pass_promtool_test_rules() -> None:
    result = promtool("test", "rules", "rules_test.yml")
    _ok(result)
    assert "SUCCESS" in result.stdout + result.stderr


def test_a_broken_config_fails_promtool_check_config(tmp_path: Path) -> None:
    # A scrape interval that is not a duration, and a job without a name.
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "global:\n  scrape_interval: soon\nscrape_configs:\n"
        "  - static_configs:\n      - targets: ['localhost:9464']\n"
    )
    result = promtool("check", "config", broken, cwd=tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr


def test_a_broken_rule_fails_promtool_check_rules(tmp_path: Path) -> None:
    broken = tmp_path / "rules.yml"
    broken.write_text(
        "groups:\n  - name: x\n    rules:\n"
        "      - record: bayou:x:rate1m\n        expr: sum by (instance) (rate(x[1m])\n"
    )
    result = promtool("check", "rules", broken, cwd=tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr


def test_a_wrong_expectation_fails_promtool_test_rules(tmp_path: Path) -> None:
    # The shipped rules with one expected value changed: promtool test rules must notice.
    (tmp_path / "rules.yml").write_text((SHIPPED / "rules.yml").read_text())
    tests = (SHIPPED / "rules_test.yml").read_text()
    wrong = tests.replace("value: 15\n", "value: 16\n", 1)
    assert wrong != tests
    (tmp_path / "rules_test.yml").write_text(wrong)
    result = promtool("test", "rules", "rules_test.yml", cwd=tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr


def test_the_config_bayou_writes_passes_promtool(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "prometheus.yml",
        {JOB_INGRESS: ["127.0.0.1:9464", "127.0.0.1:9474"], JOB_WORKER: ["127.0.0.1:9465"]},
        "1s",
        [SHIPPED / "rules.yml"],
    )
    _ok(promtool("check", "config", cfg, cwd=tmp_path))


def test_a_missing_binary_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(prometheus_fixture, "find_binary", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="make prometheus-deps"):
        prometheus_fixture.need_binary("promtool")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="make prometheus-deps"):
        prometheus_fixture.need_binary("promtool")
