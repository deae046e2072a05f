"""``bayou dashboards``: build the dashboards' JSON and provisioning, push them to a Grafana,
and draw them from a Prometheus (``snapshot``) where no Grafana runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

dashboards_app = typer.Typer(
    help="Grafana dashboards: build their JSON and provisioning files, push them to a Grafana.",
    no_args_is_help=True,
)


def _url_option(value: str, option: str, schemes: tuple[str, ...], command: str) -> str:
    """``value`` if it is a URL with one of ``schemes`` and a host; else exit 2 naming it."""
    from urllib.parse import urlparse

    try:
        parsed = urlparse(value)
        parsed.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        parsed = None
    if parsed is None or parsed.scheme not in schemes or not parsed.hostname:
        wanted = " or ".join(f"{s}://" for s in schemes)
        typer.echo(
            f"bayou dashboards {command}: {option} {value!r}: expected {wanted}HOST[:PORT]",
            err=True,
        )
        raise typer.Exit(2)
    return value


@dashboards_app.command("build")
def dashboards_build(
    out: Annotated[Path, typer.Option("--out", help="Directory to write into")] = Path(
        "dashboards/generated"
    ),
    prometheus_url: Annotated[
        str, typer.Option("--prometheus-url", help="Prometheus, as Grafana's server reaches it")
    ] = "http://localhost:9090",
    mqtt_uri: Annotated[
        str,
        typer.Option(
            "--mqtt-uri", help="Bayou's MQTT listener (tcp:// or ws://), as Grafana reaches it"
        ),
    ] = "tcp://localhost:1883",
    mqtt_username: Annotated[
        str, typer.Option("--mqtt-username", help="The MQTT user Grafana connects as")
    ] = "grafana",
) -> None:
    """Write every dashboard's JSON and the Grafana provisioning files into --out."""
    from dashboards.build import build
    from dashboards.provisioning import Sources

    _url_option(prometheus_url, "--prometheus-url", ("http", "https"), "build")
    _url_option(mqtt_uri, "--mqtt-uri", ("tcp", "tls", "ws", "wss"), "build")
    if not mqtt_username.strip() or any(c.isspace() for c in mqtt_username):
        typer.echo(
            f"bayou dashboards build: --mqtt-username {mqtt_username!r} must be a non-empty "
            "name without spaces",
            err=True,
        )
        raise typer.Exit(2)
    if out.exists() and not out.is_dir():
        typer.echo(f"bayou dashboards build: --out {out} exists and is not a directory", err=True)
        raise typer.Exit(2)
    sources = Sources(prometheus_url=prometheus_url, mqtt_uri=mqtt_uri, mqtt_username=mqtt_username)
    for path in build(out, sources):
        typer.echo(f"wrote {path}")


@dashboards_app.command("push")
def dashboards_push(
    url: Annotated[str, typer.Option("--url", help="Grafana's URL, e.g. http://localhost:3000")],
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="Grafana service account token (default: BAYOU_GRAFANA_TOKEN)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Save every dashboard to a running Grafana (same uids, overwritten; folder "Bayou")."""
    from dashboards.push import PushError, push

    _url_option(url, "--url", ("http", "https"), "push")
    from bayou.cli import _settings  # the one place settings errors are reported

    settings = _settings()
    secret = settings.grafana_token.get_secret_value() if settings.grafana_token else None
    token = token or secret
    if not token:
        typer.echo(
            "bayou dashboards push: no Grafana token: give --token or set BAYOU_GRAFANA_TOKEN",
            err=True,
        )
        raise typer.Exit(2)
    try:
        results = push(url, token)
    except PushError as exc:
        typer.echo(f"bayou dashboards push: {exc}", err=True)
        raise typer.Exit(1) from None
    for r in results:
        typer.echo(f"{r.action} {r.uid} version {r.version} {r.url}".rstrip())


@dashboards_app.command("snapshot")
def dashboards_snapshot(
    prometheus_url: Annotated[
        str, typer.Option("--prometheus-url", help="The Prometheus to draw the panels from")
    ] = "http://127.0.0.1:9090",
    out: Annotated[Path, typer.Option("--out", help="Directory for the PNG files")] = Path(
        "docs/images"
    ),
    minutes: Annotated[float, typer.Option("--minutes", help="Time range drawn", min=0.5)] = 10,
    mqtt_uri: Annotated[
        str | None,
        typer.Option(
            "--mqtt-uri",
            help="Bayou's MQTT listener (mqtt:// or ws://.../mqtt): the live panels are drawn "
            "from what their topics carry for --mqtt-seconds (default: not drawn)",
        ),
    ] = None,
    mqtt_seconds: Annotated[float, typer.Option("--mqtt-seconds", min=1)] = 15,
) -> None:
    """Draw every dashboard's panels from a Prometheus into <uid>.png files (no Grafana)."""
    import asyncio
    import time

    from bayou.mqtt_sample import collect
    from bayou.prometheus import Prometheus, PrometheusError
    from dashboards.catalog import all_dashboards
    from dashboards.snapshot import MqttSample, Series, mqtt_filters, render
    from ingress.contract.topics import matches

    try:
        prom = Prometheus.at(prometheus_url)
        prom.value("1")
    except PrometheusError as exc:
        typer.echo(f"bayou dashboards snapshot: --prometheus-url: {exc}", err=True)
        raise typer.Exit(2) from None
    if mqtt_uri is not None:
        _url_option(mqtt_uri, "--mqtt-uri", ("mqtt", "ws"), "snapshot")

    def query(expr: str, start: float, end: float, step: float) -> list[Series]:
        return [
            Series(r["metric"], [(float(t), float(v)) for t, v in r["values"]])
            for r in prom.query_range(expr, start, end, step)
        ]

    boards = all_dashboards()
    filters = sorted({f for d in boards.values() for _, f in mqtt_filters(d)})
    samples: dict[str, MqttSample] = {}
    if mqtt_uri is not None and filters:
        seen = asyncio.run(collect(mqtt_uri, filters, mqtt_seconds))
        for d in boards.values():
            for title, filt in mqtt_filters(d):
                got = [(t, m) for t, m in seen if matches(filt, t)]
                samples.setdefault(title, MqttSample()).messages.extend(got)
    end = time.time()
    start = end - minutes * 60
    step = max(minutes * 60 / 240, 1.0)
    for uid, board in boards.items():
        path = render(board, query, out / f"{uid}.png", start=start, end=end, step=step,
                      mqtt=samples)  # fmt: skip
        typer.echo(f"wrote {path}")
