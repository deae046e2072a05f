"""The agent worker process: apps on the App runtime (the demo app by default), plus metrics."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Coroutine
from typing import Any

from prometheus_client import start_http_server

from agents.app import App
from agents.runtime.config import WorkerConfig

log = logging.getLogger(__name__)


async def run_worker(
    config: WorkerConfig, stop: asyncio.Event, apps: list[App] | None = None
) -> None:
    """Run ``apps``, or the built-in demo app (:mod:`agents.demo`) when none are given, until
    ``stop`` is set; then stop the Kafka clients and close RocksDB.

    Serves Prometheus metrics on ``config.metrics_host:config.metrics_port`` unless the port
    is None. An app's state lives in ``config.state_dir / "apps" / <app name>`` (the demo's in
    ``apps/demo``). The command tracker (:mod:`agents.runtime.command_tracker`) runs beside
    them unless ``config.track_commands`` is off, in a loop and consumer group of its own
    (``<group_id>.bayou-commands``, the same for every worker whatever its apps), so each
    command is tracked once however many kinds of workers a deployment runs.
    """
    from agents.runtime.command_tracker import tracker_app
    from agents.runtime.loop import default_group, run_apps

    if not apps:
        from agents.demo import demo_app

        apps = [demo_app(config)]
        # The demo keeps the group of its first versions, so an upgraded demo against a
        # persistent Kafka carries on from its committed offsets instead of re-reading all.
        group_id = config.group_id
    else:
        group_id = default_group(config, apps)
    loops = [run_apps(config, apps, stop, group_id)]
    if config.track_commands:
        tracker = tracker_app(config)
        group = default_group(config, [tracker])
        loops.append(run_apps(config, [tracker], stop, group, main=False))
    server = None
    if config.metrics_port is not None:
        server, _thread = start_http_server(config.metrics_port, addr=config.metrics_host)
    try:
        log.info("agent worker starting: apps %s", [a.name for a in apps])
        await _run_all(loops, stop)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        log.info("agent worker stopped")


async def _run_all(loops: list[Coroutine[Any, Any, None]], stop: asyncio.Event) -> None:
    """Run the loops until all end; one that fails stops the others, then its error is
    raised."""
    tasks = [asyncio.create_task(c) for c in loops]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for res in results:
        if isinstance(res, BaseException):
            raise res


def tune_gc() -> None:
    """Keep Python's cyclic garbage collector off the hot path.

    A batch allocates a few objects per record (its messages, contexts, outputs), so with the
    default threshold (700) a collection runs every ~100 records and keeps traversing the
    batch's live objects and, in the oldest generation, everything loaded at start-up. Measured
    on the counting benchmark: 25-30 % of the worker's CPU. Objects from start-up are frozen
    out of collection (``gc.freeze``) and collections run every 50,000 allocations; the
    runtime's own data holds no reference cycles, so this only delays freeing cycles an agent
    might make.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def main(config: WorkerConfig, apps: list[App] | None = None) -> None:
    """Run a worker in the foreground; SIGINT or SIGTERM stops it cleanly."""
    tune_gc()

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await run_worker(config, stop, apps)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    asyncio.run(_main())
