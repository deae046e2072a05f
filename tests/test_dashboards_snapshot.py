"""Drawing dashboards to PNG (dashboards.snapshot): the pure parts, and a drawing from given series.

The Prometheus answers here are lists built by the test (the drawing is what is under test); the
test that draws from a real Prometheus is in tests/test_dashboards_panels.py.
"""

from __future__ import annotations

from pathlib import Path

from dashboards.snapshot import MqttSample, Series, expand, legend, render


def test_variables_match_everything_and_intervals_are_fixed() -> None:
    expr = "sum by (qos) (rate(bayou_ingress_messages_in_total"
    expr += '{instance="$instance"}[$__rate_interval]))'
    assert expand(expr, ["instance"]) == (
        'sum by (qos) (rate(bayou_ingress_messages_in_total{instance=~".+"}[1m]))'
    )
    assert expand('x{app=~"${app}"}', ["app"]) == 'x{app=~".+"}'


def test_legend_fills_labels_and_names_unlabelled_series() -> None:
    assert legend("{{instance}} qos {{qos}}", {"instance": "a:1", "qos": "1"}) == "a:1 qos 1"
    assert legend(None, {"__name__": "x", "b": "2", "a": "1"}) == '{a="1", b="2"}'
    assert legend("", {}) == "value"


def test_a_dashboard_is_drawn_with_every_kind_of_panel(tmp_path: Path) -> None:
    asked: list[str] = []

    def query(expr: str, start: float, end: float, step: float) -> list[Series]:
        asked.append(expr)
        if "empty" in expr:
            return []
        return [Series({"qos": "1"}, [(start + i * step, float(i)) for i in range(10)])]

    def panel(kind: str, y: int, expr: str) -> dict[str, object]:
        return {
            "type": kind,
            "title": f"{kind} panel",
            "gridPos": {"x": 0, "y": y, "w": 12, "h": 6},
            "datasource": {"type": "prometheus", "uid": "bayou-prometheus"},
            "fieldConfig": {"defaults": {"unit": "s"}},
            "targets": [{"expr": expr, "legendFormat": "qos {{qos}}", "refId": "A"}],
        }

    dashboard = {
        "title": "Test",
        "templating": {"list": [{"name": "instance"}]},
        "panels": [
            {"type": "row", "title": "row", "gridPos": {"x": 0, "y": 0, "w": 24, "h": 1}},
            panel("timeseries", 1, 'rate(a_total{instance="$instance"}[$__rate_interval])'),
            panel("stat", 7, "b"),
            panel("table", 13, "c"),
            panel("timeseries", 19, "empty"),
            {
                "type": "table",
                "title": "live",
                "gridPos": {"x": 12, "y": 1, "w": 12, "h": 6},
                "datasource": {"type": "grafana-mqtt-datasource", "uid": "bayou-mqtt"},
                "targets": [{"topic": "sensors/+/stats", "refId": "A"}],
            },
        ],
    }
    live = MqttSample([("sensors/d1/stats", {"device": "d1", "mean": 21.5})])
    out = render(dashboard, query, tmp_path / "t.png", start=0, end=50, mqtt={"live": live})
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10_000
    assert asked == ['rate(a_total{instance=~".+"}[1m])', "b", "c", "empty"]
