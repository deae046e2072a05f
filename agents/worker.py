"""The agent worker process: the demo agent on the batch runtime, plus its metrics endpoint."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from prometheus_client import start_http_server

from agents.app import App
from agents.config import WorkerConfig
from agents.demo import AGENT_NAME, DemoAgent
from agents.runtime import run_batch_loop
from agents.state import StateStore

log = logging.getLogger(__name__)


async def run_worker(
    config: WorkerConfig, stop: asyncio.Event, apps: list[App] | None = None
) -> None:
    """Run the demo agent, or ``apps`` when given, until ``stop`` is set; then stop Kafka
    clients and close RocksDB.

    Serves Prometheus metrics on ``config.metrics_host:config.metrics_port`` unless the port
    is None. The demo's state lives in ``config.state_dir / "demo"``, an app's in
    ``config.state_dir / "apps" / <app name>``.
    """
    server = None
    if config.metrics_port is not None:
        server, _thread = start_http_server(config.metrics_port, addr=config.metrics_host)
    try:
        if apps:
            from agents.app_runtime import run_apps

            log.info("agent worker starting: apps %s", [a.name for a in apps])
            await run_apps(config, apps, stop)
        else:
            await _run_demo(config, stop)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        log.info("agent worker stopped")


async def _run_demo(config: WorkerConfig, stop: asyncio.Event) -> None:
    store = StateStore(config.state_dir / AGENT_NAME)
    try:
        agent = DemoAgent(config, store, time.time())
        log.info("agent worker starting: %s in group %s", config.telemetry_topic, config.group_id)
        await run_batch_loop(config, [config.telemetry_topic], agent, stop)
    finally:
        store.close()


def main(config: WorkerConfig, apps: list[App] | None = None) -> None:
    """Run a worker in the foreground; SIGINT or SIGTERM stops it cleanly."""

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
