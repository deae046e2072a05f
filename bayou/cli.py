"""The ``bayou`` command: composes ingress, agents and the embedded broker; no logic of its own."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path
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


def check_security(settings: Settings, command: str, *, dev: bool = False) -> None:
    """Exit 2 with one clear line if the MQTT security settings cannot work: a password file,
    key or ACL file that does not load, or nothing at all to authenticate clients with."""
    from ingress.security.config import SecurityConfigError
    from ingress.security.guard import Guard

    config = settings.security_config(allow_anonymous_default=dev)
    if settings.tls_cafile is not None and settings.tls_port is None:
        typer.echo(
            f"bayou {command}: BAYOU_TLS_CAFILE={settings.tls_cafile} is set but BAYOU_TLS_PORT "
            "is not: client certificates are checked on the TLS listener only; set "
            "BAYOU_TLS_PORT (and BAYOU_TLS_CERTFILE), or unset BAYOU_TLS_CAFILE",
            err=True,
        )
        raise typer.Exit(2)
    if not config.auth.allow_anonymous and not config.auth.methods():
        typer.echo(
            f"bayou {command}: no MQTT client could connect: no authentication method is "
            "configured (BAYOU_AUTH_PASSWORD_FILE, BAYOU_AUTH_JWT_*, BAYOU_TLS_CAFILE) and "
            "anonymous access is off; configure one (docs/security.md), or set "
            "BAYOU_ALLOW_ANONYMOUS=true to let anyone connect",
            err=True,
        )
        raise typer.Exit(2)
    try:
        Guard.build(config)
    except SecurityConfigError as exc:
        typer.echo(f"bayou {command}: {exc}", err=True)
        raise typer.Exit(2) from None


def _topics(
    settings: Settings,
    command: str,
    bootstrap: str,
    topics: list[str],
    compacted: frozenset[str] = frozenset(),
) -> None:
    """Create the missing ``topics``; a refused or unreachable Kafka exits with one line."""
    from kafkaio.admin import ensure_topics
    from kafkaio.clients import KafkaConnectError

    try:
        asyncio.run(
            ensure_topics(
                bootstrap,
                topics,
                settings.topic_partitions,
                settings.replication_factor,
                compacted,
                security=settings.kafka_security(),
            )
        )
    except KafkaConnectError as exc:
        # Name the setting to fix when it is the user's (not `bayou up`'s embedded broker).
        where = f" (check BAYOU_KAFKA_BOOTSTRAP={bootstrap})" if settings.kafka_bootstrap else ""
        typer.echo(f"bayou {command}: {exc}{where}", err=True)
        raise typer.Exit(1) from None


def _create_topics(settings: Settings, bootstrap: str, command: str) -> None:
    _topics(settings, command, bootstrap, settings.all_topics(), settings.compacted_topics())


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
    from ingress.node import PortInUseError, main
    from ingress.wire.listeners import ListenerError

    settings = _settings()
    bootstrap = _bootstrap(settings, "ingress")
    check_security(settings, "ingress")
    # Unique per node: it names the node's connections in session records (takeover).
    node_id = node_id or f"ingress-{socket.gethostname()}-{os.getpid()}"
    if settings.ingress_processes > 1 and not settings.ingress_child:
        from bayou.node_group import run_node_group

        _ports_free(settings, "ingress", ("mqtt",))
        _create_topics(settings, bootstrap, "ingress")
        raise typer.Exit(run_node_group(settings, node_id))
    if not settings.ingress_child:
        _ports_free(settings, "ingress", ("mqtt", "ingress_metrics"))
        _create_topics(settings, bootstrap, "ingress")
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
    from agents.runtime.worker import main

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
    _create_topics(settings, bootstrap, "worker")
    if apps:
        inputs, changelogs = topics
        _topics(settings, "worker", bootstrap, inputs)
        _topics(settings, "worker", bootstrap, changelogs, frozenset(changelogs))
    main(config, apps)


def _app_topics(apps: list[Any], routes: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """The apps' input topics and changelog topics (resolving raises AppError early)."""
    from agents.runtime.store import changelog_topic, resolve_topic

    inputs = sorted({resolve_topic(a, routes) for app_ in apps for a in app_.agents})
    # The changelogs of the apps, and of the apps whose tables they read (global tables).
    changelogs = [changelog_topic(a.name) for a in apps]
    changelogs += [g.changelog for a in apps for g in a.global_tables]
    return inputs, sorted(set(changelogs))


def _parse_time(value: str, option: str) -> int:
    """Epoch milliseconds of ``value``: epoch seconds, or ISO 8601 (no zone: UTC)."""
    from datetime import UTC, datetime

    try:
        return round(float(value) * 1000)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        typer.echo(
            f"bayou replay: {option} {value!r} is neither epoch seconds nor an ISO 8601 time",
            err=True,
        )
        raise typer.Exit(2) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


@app.command()
def replay(
    agents: Annotated[
        list[str], typer.Option("--agents", help="Python module defining agents.app.App objects")
    ],
    from_: Annotated[
        str,
        typer.Option(
            "--from", help="Replay records from this time: ISO 8601 (no zone: UTC) or epoch s"
        ),
    ],
    until: Annotated[
        str | None, typer.Option("--until", help="...up to (not including) this time")
    ] = None,
    output_topic: Annotated[
        str | None,
        typer.Option("--output-topic", help="Topic for every output (default bayou.replay.<app>)"),
    ] = None,
) -> None:
    """Re-run apps over past input in Kafka, writing their outputs to a replay topic.

    Fresh in-memory state; no consumer group commits; nothing goes to bayou.outbound, devices,
    webhooks or bayou.deadletter. Reads each input partition from --from up to its end when
    the replay starts, then prints a summary and exits.
    """
    from agents.app import AppError, load_apps
    from agents.runtime.replay import replay as run_replay
    from agents.runtime.replay import replay_topic

    settings = _settings()
    bootstrap = _bootstrap(settings, "replay")
    start_ms = _parse_time(from_, "--from")
    until_ms = _parse_time(until, "--until") if until is not None else None
    if until_ms is not None and until_ms <= start_ms:
        typer.echo("bayou replay: --until must be after --from", err=True)
        raise typer.Exit(2)
    config = settings.worker_config(bootstrap)
    try:
        apps = load_apps(agents)
        inputs, changelogs = _app_topics(apps, config.routes)
    except (AppError, ImportError) as exc:
        typer.echo(f"bayou replay: {exc}", err=True)
        raise typer.Exit(2) from None
    outputs = [output_topic] if output_topic else [replay_topic(a.name) for a in apps]
    taken = {*settings.all_topics(), *inputs, *changelogs}
    clash = sorted(t for t in outputs if t in taken or t.startswith("bayou.changelog."))
    if clash:
        typer.echo(
            f"bayou replay: output topic {clash[0]!r} is a topic Bayou reads or writes live; "
            "pick another --output-topic",
            err=True,
        )
        raise typer.Exit(2)
    _topics(settings, "replay", bootstrap, outputs)
    security = config.kafka_security
    summary = asyncio.run(
        run_replay(bootstrap, apps, config.routes, start_ms, until_ms, output_topic, security)
    )
    for line in summary.lines():
        typer.echo(line)


@app.command()
def up(
    demo: bool = typer.Option(False, "--demo", help="Also run a simulated fleet of devices"),
    agents: Annotated[list[str] | None, typer.Option("--agents", help=_AGENTS_HELP)] = None,
    prometheus: bool = typer.Option(
        False,
        "--prometheus",
        help="Also run a Prometheus (Debian package `prometheus`) scraping the stack, "
        "on BAYOU_PROMETHEUS_PORT",
    ),
) -> None:
    """Start the whole stack: Kafka (embedded unless configured), ingress, agent worker."""
    from bayou.stack import StackError, run_stack

    settings = _settings()
    check_security(settings, "up", dev=True)
    try:
        code = run_stack(settings, demo=demo, agents=agents or [], prometheus=prometheus)
    except StackError as exc:
        typer.echo(f"bayou up: {exc}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def _add_passwd() -> None:
    from bayou.passwd import passwd_app

    app.add_typer(passwd_app, name="passwd")


_add_passwd()


acl_app = typer.Typer(help="Inspect an ACL file (BAYOU_ACL_FILE).", no_args_is_help=True)
app.add_typer(acl_app, name="acl")


@acl_app.command("check")
def acl_check(
    file: Annotated[Path, typer.Argument(help="The ACL file (TOML or YAML)")],
    user: Annotated[str | None, typer.Option("--user", help="Username (none: anonymous)")] = None,
    group: Annotated[list[str] | None, typer.Option("--group", help="A group (repeatable)")] = None,
    client: Annotated[str, typer.Option("--client", help="Client id")] = "bayou-acl-check",
    publish: Annotated[str | None, typer.Option("--publish", help="Topic to publish to")] = None,
    subscribe: Annotated[
        str | None, typer.Option("--subscribe", help="Filter to subscribe to")
    ] = None,
    receive: Annotated[
        str | None, typer.Option("--receive", help="Topic of a message to be delivered")
    ] = None,
) -> None:
    """Print whether the ACL allows one operation, and the rule that decided (exit 0 allow,
    1 deny, 2 bad file or topic)."""
    from ingress.security.acl import Operation
    from ingress.security.acl_check import TopicError, check
    from ingress.security.config import SecurityConfigError

    given: dict[Operation, str | None] = {
        "publish": publish,
        "subscribe": subscribe,
        "receive": receive,
    }
    asked = [(op, t) for op, t in given.items() if t is not None]
    if len(asked) != 1:
        typer.echo(
            "bayou acl check: give exactly one of --publish, --subscribe, --receive", err=True
        )
        raise typer.Exit(2)
    operation, topic = asked[0]
    try:
        result = check(file, operation, topic, user, tuple(group or ()), client)
    except (SecurityConfigError, TopicError) as exc:
        typer.echo(f"bayou acl check: {exc}", err=True)
        raise typer.Exit(2) from None
    for line in result.lines:
        typer.echo(line)
    raise typer.Exit(0 if result.allowed else 1)


def _add_dashboards() -> None:
    from bayou.dashboards_cli import dashboards_app

    app.add_typer(dashboards_app, name="dashboards")


_add_dashboards()


def main() -> None:
    """Entry point for ``python -m bayou.cli``."""
    app(prog_name="bayou")


if __name__ == "__main__":
    main()
