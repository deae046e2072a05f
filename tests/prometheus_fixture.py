"""A real Prometheus for tests: the ``prometheus`` fixture and the promtool/binary checks.

The ``prometheus`` fixture is a factory: ``prometheus({JOB_INGRESS: ["127.0.0.1:PORT"]})``
starts Debian's ``prometheus`` through :mod:`bayou.prometheus` (the code ``bayou up
--prometheus`` uses) on a free port of 127.0.0.1, its config and TSDB in the test's
temporary directory, scraping every second; teardown stops each by its PID. The handle it
returns is the :class:`bayou.prometheus.Prometheus` itself (``url``, ``query()``,
``query_range()``, ``value()``, ``targets()``); :func:`wait_value` waits, bounded, for an
expression to reach a value.

When the binaries are missing, the tests fail under CI (``CI`` set: CI must run them) and
skip elsewhere with the command that installs them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from bayou.prometheus import Prometheus, PrometheusError, find_binary, start

# A test's scrape interval: a series appears within seconds. (Prometheus itself waits up to
# 5s before its first scrape of static targets: its discovery manager throttles updates.)
TEST_SCRAPE_INTERVAL = "1s"

PrometheusFactory = Callable[..., Prometheus]


def need_binary(name: str) -> str:
    """The path of ``name`` (prometheus, promtool); fail under CI, skip elsewhere, if absent."""
    path = find_binary(name)
    if path is None:
        message = f"{name} is not installed: run `make prometheus-deps`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[PrometheusFactory]:
    """Start real Prometheus servers: ``prometheus(targets, scrape_interval="1s",
    rule_files=())`` → a ready :class:`Prometheus`. Every one is stopped by PID at the end."""
    need_binary("prometheus")
    started: list[Prometheus] = []

    def factory(
        targets: Mapping[str, Sequence[str]],
        scrape_interval: str = TEST_SCRAPE_INTERVAL,
        rule_files: Sequence[str | Path] = (),
    ) -> Prometheus:
        directory = tmp_path / f"prometheus-{len(started)}"
        # Generous: two shared cores, and other worktrees' tests running alongside.
        prom = start(targets, directory, 0, scrape_interval, rule_files, ready_timeout=60)
        started.append(prom)
        return prom

    yield factory
    for prom in started:
        prom.stop()


def wait_value(
    prom: Prometheus,
    expr: str,
    accept: Callable[[float], bool],
    timeout: float,
) -> float:
    """Poll ``expr`` until its value passes ``accept``; the value. On timeout: AssertionError
    with the last value, the scrape targets' health and Prometheus's log tail."""
    deadline = time.monotonic() + timeout
    last: float | None = None
    while True:
        try:
            last = prom.value(expr)
        except PrometheusError:
            last = None  # a query while the TSDB is busy: try again
        if last is not None and accept(last):
            return last
        if time.monotonic() > deadline:
            try:
                targets = [
                    (t["labels"].get("job"), t["scrapeUrl"], t["health"], t["lastError"])
                    for t in prom.targets()
                ]
            except PrometheusError as e:
                targets = [("?", "?", "?", str(e))]
            raise AssertionError(
                f"{expr} = {last} after {timeout:.0f}s; targets {targets}\n{prom.log_tail()}"
            )
        time.sleep(0.2)
