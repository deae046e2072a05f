"""Pictures of the dashboards without a Grafana server: each panel drawn from a Prometheus.

``bayou dashboards snapshot`` reads the generated dashboard JSON, runs every Prometheus target of
every panel as a range query, and draws the panels where Grafana would put them (``gridPos`` on
the 24-column grid) into one PNG per dashboard with matplotlib: time series as lines, stats as
their last value, tables as rows of labels and values. Panels fed by MQTT (the live Fleet
panels) are drawn from messages the caller collected on their topics, or say where they read.

Grafana itself is the renderer people use; this exists so the docs and a reviewer can see what
the dashboards show from a machine where no Grafana can run (issue 10, item 5).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI

import matplotlib.pyplot as plt
from matplotlib.axes import Axes


@dataclass
class Series:
    """One series of a range query: its labels and (unix seconds, value) points."""

    labels: dict[str, str]
    points: list[tuple[float, float]]


# expr, start, end, step → series (bayou.prometheus.Prometheus.query_range fits).
RangeQuery = Callable[[str, float, float, float], list[Series]]


@dataclass
class MqttSample:
    """Messages seen on one MQTT panel's topic: (topic, JSON payload decoded or text)."""

    messages: list[tuple[str, Any]] = field(default_factory=list)


# Grafana's built-in interval variables, as a snapshot of a short range uses them.
_BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
_ROW_UNITS = 0.42  # inches per gridPos height unit
_COL_UNITS = 0.75  # inches per gridPos column
_HEADER_IN = 0.6  # the dashboard's title
_TIME_KEYS = ("ts", "window_start", "window_end", "count")


def expand(expr: str, variables: Sequence[str]) -> str:
    """``expr`` with dashboard variables matching everything (``label="$v"`` becomes
    ``label=~".+"``) and Grafana's interval variables replaced by fixed durations."""
    for name in variables:
        expr = re.sub(rf'(\w+)\s*=~?\s*"\$\{{?{name}\}}?"', r'\1=~".+"', expr)
    for name, value in _BUILTINS.items():
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    return expr


def legend(fmt: str | None, labels: Mapping[str, str]) -> str:
    """A series' name from Grafana's ``legendFormat`` (``{{label}}`` placeholders)."""
    if not fmt or fmt == "__auto":
        inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
        return "{" + inner + "}" if inner else "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def _fmt(value: float, unit: str | None) -> str:
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "bytes":
        for step, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if value >= step:
                return f"{value / step:.1f} {suffix}"
        return f"{value:.0f} B"
    if unit == "percentunit":
        return f"{value * 100:.1f} %"
    text = f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{text} {unit}" if unit and unit not in ("short", "none") else text


def _panels(dashboard: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return out


def mqtt_filters(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(panel title, topic filter) of every MQTT target of ``dashboard``."""
    return [
        (p.get("title", ""), t["topic"])
        for p in _panels(dashboard)
        if _is_mqtt(p)
        for t in p.get("targets", [])
        if t.get("topic")
    ]


def _is_mqtt(panel: Mapping[str, Any]) -> bool:
    ds = panel.get("datasource") or {}
    return "mqtt" in str(ds.get("type", "")) or any(
        "topic" in t and "expr" not in t for t in panel.get("targets", [])
    )


def _draw_prometheus(
    ax: Axes,
    panel: Mapping[str, Any],
    query: RangeQuery,
    variables: Sequence[str],
    window: tuple[float, float, float],
) -> None:
    unit = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("unit")
    drawn: list[tuple[str, Series]] = []
    for target in panel.get("targets", []):
        if not target.get("expr"):
            continue
        for s in query(expand(target["expr"], variables), *window):
            drawn.append((legend(target.get("legendFormat"), s.labels), s))
    kind = panel.get("type")
    if not drawn:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", color="grey", fontsize=12)
        ax.set_axis_off()
        return
    if kind == "stat" or kind == "gauge":
        ax.set_axis_off()
        lines = [f"{_fmt(s.points[-1][1], unit)}" for _, s in drawn if s.points]
        ax.text(0.5, 0.45, "\n".join(lines[:3]), ha="center", va="center", fontsize=20)
        return
    if kind == "table":
        ax.set_axis_off()
        rows = [[name[:60], _fmt(s.points[-1][1], unit)] for name, s in drawn[:12] if s.points]
        if rows:
            ax.table(cellText=rows, colLabels=["series", "value"], loc="upper center")
        return
    t0 = window[0]
    for name, s in drawn[:12]:
        xs = [(t - t0) for t, _ in s.points]
        ax.plot(xs, [v for _, v in s.points], label=name[:50], linewidth=1.2)
    ax.set_xlabel("seconds", fontsize=7)
    ax.tick_params(labelsize=7)
    if unit:
        ax.set_ylabel(unit, fontsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left")


def _numeric(msg: Any) -> dict[str, float]:
    if not isinstance(msg, dict):
        return {}
    return {k: float(v) for k, v in msg.items() if isinstance(v, int | float)}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.0f}" if value > 1e9 else f"{value:.2f}"  # epoch seconds: whole
    return str(value)[:24]


def _draw_mqtt(ax: Axes, panel: Mapping[str, Any], sample: MqttSample | None) -> None:
    topics = ", ".join(t.get("topic", "") for t in panel.get("targets", []))
    if sample is None or not sample.messages:
        ax.set_axis_off()
        what = "live over MQTT" if sample is None else "no message in the time sampled"
        ax.text(0.5, 0.5, f"{what}: {topics}", ha="center", va="center", color="grey")
        return
    if panel.get("type") == "timeseries":
        # As Grafana draws a JSON stream: one line per topic, a numeric field over time (the
        # window's end when the message has one). ``mean`` first: the demo's window stats.
        by_topic: dict[str, list[tuple[float, float]]] = {}
        for topic, msg in sample.messages:
            nums = _numeric(msg)
            x = nums.get("window_end", nums.get("ts"))
            y = nums.get("mean", next((v for k, v in nums.items() if k not in _TIME_KEYS), None))
            if x is not None and y is not None:
                by_topic.setdefault(topic, []).append((x, y))
        if by_topic:
            t0 = min(x for pts in by_topic.values() for x, _ in pts)
            for topic, pts in sorted(by_topic.items())[:12]:
                pts.sort()
                ax.plot([x - t0 for x, _ in pts], [y for _, y in pts], marker="o",
                        linewidth=1.2, label=topic)  # fmt: skip
            ax.set_xlabel("seconds", fontsize=7)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="upper left", ncol=2)
            return
    ax.set_axis_off()
    rows = sample.messages[-10:]
    keys: list[str] = []
    for _, msg in rows:
        for k in msg if isinstance(msg, dict) else ():
            if k not in keys and len(keys) < 7:
                keys.append(k)
    cells = [
        [_cell(msg.get(k, "")) if isinstance(msg, dict) else str(msg)[:60] for k in keys or [""]]
        for _, msg in rows
    ]
    table = ax.table(cellText=cells, colLabels=keys or ["message"], loc="upper center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)


def render(
    dashboard: Mapping[str, Any],
    query: RangeQuery,
    out: Path,
    *,
    start: float,
    end: float,
    step: float = 5.0,
    mqtt: Mapping[str, MqttSample] | None = None,
) -> Path:
    """Draw ``dashboard`` (Grafana JSON) into the PNG ``out``; ``mqtt``: samples by panel title."""
    panels = _panels(dashboard)
    variables = [v["name"] for v in (dashboard.get("templating") or {}).get("list", [])]
    bottom = max((p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels), default=1)
    width_in, height_in = 24 * _COL_UNITS, bottom * _ROW_UNITS + _HEADER_IN
    fig = plt.figure(figsize=(width_in, height_in))
    fig.suptitle(dashboard.get("title", ""), fontsize=16, x=0.01, ha="left")
    for p in panels:
        g = p["gridPos"]
        # The cell in inches from the bottom left, less room for tick labels and the title.
        left, top = g["x"] * _COL_UNITS, height_in - _HEADER_IN - g["y"] * _ROW_UNITS
        w, h = g["w"] * _COL_UNITS, g["h"] * _ROW_UNITS
        if p.get("type") == "row":
            fig.text(left / width_in, (top - h / 2) / height_in, p.get("title", ""),
                     fontsize=11, weight="bold", va="center")  # fmt: skip
            continue
        pad_l, pad_b, pad_t = 0.55, 0.4, 0.3
        rect = (
            (left + pad_l) / width_in,
            (top - h + pad_b) / height_in,
            max(w - pad_l - 0.15, 0.1) / width_in,
            max(h - pad_b - pad_t, 0.1) / height_in,
        )
        ax = fig.add_axes(rect)
        ax.set_title(p.get("title", ""), fontsize=9, loc="left")
        if _is_mqtt(p):
            _draw_mqtt(ax, p, (mqtt or {}).get(p.get("title", "")))
        else:
            _draw_prometheus(ax, p, query, variables, (start, end, step))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
