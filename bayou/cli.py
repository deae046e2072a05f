"""The ``bayou`` command: composes ingress, agents and the embedded broker; no logic of its own."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Annotated, Any

import typer

from bayou.settings import (
    PortTakenError,
    Settings,
    SettingsError,
    check_ports_free,
    load_settings,
)

app = typer.Typer(
    help="Bayou: MQTT in, Kafka in the middle, Python agents, commands out.",
    no_args_is_help=True,
    add_completion=False,
)


def _settings() -> Settings:
    try:
        settings = load_settings()
    except SettingsError as exc:
        typer.echo(f"bayou: {exc}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return settings


def _bootstrap(settings: Settings, command: str) -> str:
    if not settings.kafka_bootstrap:
        typer.echo(
            f"bayou {command}: BAYOU_KAFKA_BOOTSTRAP is not set; point it at Kafka "
            "(or run `bayou up`, which starts an embedded broker)",
            err=True,
        )
        raise typer.Exit(2)
    return settings.kafka_bootstrap


def _ports_free(settings: Settings, command: str, which: tuple[str, ...]) -> None:
    try:
        check_ports_free(settings, which)
    except PortTakenError as exc:
        typer.echo(f"bayou {command}: {exc}", err=True)
        raise typer.Exit(1) from None


def _create_topics(settings: Settings, bootstrap: str) -> None:
    from bayou.kafka_topics import ensure_topics

    asyncio.run(
        ensure_topics(
            bootstrap,
            settings.all_topics(),
            settings.topic_partitions,
            settings.replication_factor,
            settings.compacted_topics(),
        )
    )


@app.command()
def ingress(
    node_id: str = typer.Option(
        None, help="Unique name of this node (default: ingress-<host>-<pid>)", show_default=False
    ),
) -> None:
    """Run an MQTT ingress node against BAYOU_KAFKA_BOOTSTRAP.

    With BAYOU_INGRESS_PROCESSES=N, runs N node processes sharing the MQTT port
    (SO_REUSEPORT), named <node-id>-1..N, metrics on BAYOU_INGRESS_METRICS_PORT + 0..N-1.
    """
    from ingress.listeners import ListenerError
    from ingress.node import PortInUseError, main

    settings = _settings()
    bootstrap = _bootstrap(settings, "ingress")
    # Unique per node: it names the node's connections in session records (takeover).
    node_id = node_id or f"ingress-{socket.gethostname()}-{os.getpid()}"
    if settings.ingress_processes > 1 and not settings.ingress_child:
        from bayou.node_group import run_node_group

        _ports_free(settings, "ingress", ("mqtt",))
        _create_topics(settings, bootstrap)
        raise typer.Exit(run_node_group(settings, node_id))
    if not settings.ingress_child:
        _ports_free(settings, "ingress", ("mqtt", "ingress_metrics"))
        _create_topics(settings, bootstrap)
    try:
        main(settings.ingress_config(bootstrap, node_id=node_id))
    except (PortInUseError, ListenerError) as exc:
        typer.echo(f"bayou ingress: {exc}", err=True)
        raise typer.Exit(1) from None


_AGENTS_HELP = (
    "Python module defining agents.app.App objects (repeat for several); "
    "without it, the built-in demo agents run"
)


@app.command()
def worker(
    agents: Annotated[list[str] | None, typer.Option("--agents", help=_AGENTS_HELP)] = None,
) -> None:
    """Run one agent worker (your --agents modules, else the demo) against BAYOU_KAFKA_BOOTSTRAP."""
    from agents.app import AppError, load_apps
    from agents.worker import main

    settings = _settings()
    bootstrap = _bootstrap(settings, "worker")
    _ports_free(settings, "worker", ("worker_metrics",))
    config = settings.worker_config(bootstrap)
    try:
        apps = load_apps(agents or [])
        topics = _app_topics(apps, config.routes) if apps else ([], [])
    except (AppError, ImportError) as exc:
        typer.echo(f"bayou worker: {exc}", err=True)
        raise typer.Exit(2) from None
    _create_topics(settings, bootstrap)
    if apps:
        from bayou.kafka_topics import ensure_topics

        inputs, changelogs = topics
        p, rf = settings.topic_partitions, settings.replication_factor
        asyncio.run(ensure_topics(bootstrap, inputs, p, rf))
        asyncio.run(ensure_topics(bootstrap, changelogs, p, rf, frozenset(changelogs)))
    main(config, apps)


def _app_topics(apps: list[Any], routes: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """The apps' input topics and changelog topics (resolving raises AppError early)."""
    from agents.app_runtime import changelog_topic, resolve_topic

    inputs = sorted({resolve_topic(a, routes) for app_ in apps for a in app_.agents})
    return inputs, [changelog_topic(a.name) for a in apps]


@app.command()
def up(
    demo: bool = typer.Option(False, "--demo", help="Also run a simulated fleet of devices"),
    agents: Annotated[list[str] | None, typer.Option("--agents", help=_AGENTS_HELP)] = None,
) -> None:
    """Start the whole stack: Kafka (embedded unless configured), ingress, agent worker."""
    from bayou.stack import StackError, run_stack

    settings = _settings()
    try:
        code = run_stack(settings, demo=demo, agents=agents or [])
    except StackError as exc:
        typer.echo(f"bayou up: {exc}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def main() -> None:
    """Entry point for ``python -m bayou.cli``."""
    app(prog_name="bayou")


if __name__ == "__main__":
    main()
