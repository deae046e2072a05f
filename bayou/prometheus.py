"""A real Prometheus as a child process, and a tiny PromQL client.

``bayou up --prometheus`` and the tests use it the same way: :func:`write_config` writes a
config scraping Bayou's metrics endpoints (job ``bayou-ingress`` for ingress nodes,
``bayou-worker`` for agent workers, static ``host:port`` targets), :func:`start` runs the
``prometheus`` binary (Debian's package: ``make prometheus-deps``) on a port of 127.0.0.1 with
its TSDB in a directory of the caller's, waits until ``/-/ready``, and the returned
:class:`Prometheus` answers PromQL over the HTTP API and stops the process by its PID.

The client is urllib and json only: Bayou needs a handful of instant and range queries, not a
dependency. Prometheus's own API errors (a bad expression, a timeout) become
:class:`PrometheusError` with Prometheus's message.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from bayou.net import free_port
from bayou.processes import die_with_parent, stop_process

JOB_INGRESS = "bayou-ingress"
JOB_WORKER = "bayou-worker"
DEFAULT_SCRAPE_INTERVAL = "5s"
INSTALL_HINT = "run `make prometheus-deps` (Debian/Ubuntu: apt-get install prometheus)"

# Debian installs both in /usr/bin; /usr/sbin and /usr/local/bin cover a PATH without them
# (sudo's secure_path, a hand-installed release tarball).
_FALLBACK_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin")
# Prometheus's duration syntax (one or more unit groups: 1m30s, 500ms, 5s).
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


class PrometheusError(RuntimeError):
    """Prometheus is missing, did not start, or answered a query with an error."""


def find_binary(name: str = "prometheus") -> str | None:
    """The path of ``name`` (``prometheus`` or ``promtool``), or None when it is not installed."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _FALLBACK_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file():
            return str(candidate)
    return None


def require_binary(name: str = "prometheus") -> str:
    """Like :func:`find_binary`, but a :class:`PrometheusError` saying how to install it."""
    found = find_binary(name)
    if found is None:
        raise PrometheusError(f"{name} is not installed; {INSTALL_HINT}")
    return found


def config(
    targets: Mapping[str, Sequence[str]],
    scrape_interval: str = DEFAULT_SCRAPE_INTERVAL,
    rule_files: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """A Prometheus configuration: one scrape job per entry of ``targets`` (job name →
    ``host:port`` targets, e.g. ``{JOB_INGRESS: ["127.0.0.1:9464"]}``) every
    ``scrape_interval`` (a Prometheus duration), with ``rule_files`` loaded."""
    if not _DURATION.match(scrape_interval):
        raise ValueError(f"not a Prometheus duration: {scrape_interval!r}")
    for job, addresses in targets.items():
        for address in addresses:
            host, sep, port = address.rpartition(":")
            if not (sep and host and port.isdigit()):
                raise ValueError(f"target of {job} is not host:port: {address!r}")
    return {
        # Rules evaluate as often as series are scraped: a recording rule over a 1s scrape
        # should not lag by a 1m default evaluation interval. Prometheus lowers its default
        # 10s scrape timeout to the interval itself when the interval is shorter.
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(f) for f in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(addresses)}]}
            for job, addresses in targets.items()
        ],
    }


def write_config(
    path: Path,
    targets: Mapping[str, Sequence[str]],
    scrape_interval: str = DEFAULT_SCRAPE_INTERVAL,
    rule_files: Sequence[str | Path] = (),
) -> Path:
    """Write :func:`config` as YAML to ``path``; return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config(targets, scrape_interval, rule_files), sort_keys=False)
    path.write_text("# Written by bayou.prometheus.write_config.\n" + text)
    return path


@dataclass
class Prometheus:
    """A running Prometheus child: its HTTP API on ``127.0.0.1:port``, its log, its PID."""

    port: int
    directory: Path
    config_file: Path
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"
    timeout: float = 10.0
    _started: float = field(default=0.0, repr=False)

    @classmethod
    def at(cls, url: str) -> Prometheus:
        """A handle on a Prometheus someone else runs (``http://host:port``): queries only."""
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise PrometheusError(f"{url!r}: expected http://HOST[:PORT]")
        return cls(parsed.port or 9090, Path("."), Path("."), host=parsed.hostname)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "prometheus.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- the process ---------------------------------------------------------------------

    def launch(self, binary: str | None = None) -> None:
        """Start the process (no wait; :meth:`wait_ready` does that)."""
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        cmd = [
            binary or require_binary("prometheus"),
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address={self.host}:{self.port}",
            # Reload and quit over HTTP are for the operator of a long-lived server; ours is
            # stopped by PID, so the default (off) stays. No admin API either.
        ]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                # Dies with its parent (no orphan keeps a port and a TSDB lock); its own
                # session so a terminal's Ctrl-C reaches only the parent, which stops it.
                preexec_fn=die_with_parent, start_new_session=True,
            )  # fmt: skip
        self._started = time.monotonic()

    def ready(self) -> bool:
        """True when ``/-/ready`` answers 200 (config loaded, TSDB open, serving queries)."""
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return int(r.status) == 200
        except OSError:  # refused while starting, 503 while the TSDB opens
            return False

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Block until ready; return the seconds since :meth:`launch`. On exit or timeout:
        stop it and raise :class:`PrometheusError` with its log tail."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                self.stop()
                raise PrometheusError(
                    f"prometheus exited with {code}; log {self.log}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                tail = self.log_tail()
                raise PrometheusError(f"prometheus not ready after {timeout:.0f}s; log:\n{tail}")
            time.sleep(0.1)
        return time.monotonic() - self._started

    def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM by PID, SIGKILL after ``timeout`` s (see :func:`bayou.processes.stop_process`).
        True when it exited in time (Prometheus flushes its head block on SIGTERM)."""
        in_time = stop_process(self.proc, timeout)
        self.proc = None
        return in_time

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- PromQL --------------------------------------------------------------------------

    def api(self, path: str, params: Mapping[str, str]) -> Any:
        """GET ``/api/v1/<path>`` with ``params``; the ``data`` of a successful answer."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            # 400 (bad expression), 422 (cannot execute), 503 (timeout): JSON with the reason.
            try:
                body = json.loads(e.read())
            except ValueError:
                raise PrometheusError(f"{path}: HTTP {e.code}") from None
        except OSError as e:
            raise PrometheusError(f"{path}: {e}") from e
        if body.get("status") != "success":
            raise PrometheusError(f"{path}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[Any]:
        """The ``result`` of an instant query: for a vector, ``[{"metric": {...},
        "value": [t, "v"]}, ...]``; for a scalar or string, ``[t, "v"]``."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        result: list[Any] = self.api("query", params)["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Any]:
        """The ``result`` of a range query (unix seconds): ``[{"metric": {...},
        "values": [[t, "v"], ...]}, ...]``."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"}
        result: list[Any] = self.api("query_range", params)["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The value of an instant query that yields one number (a scalar, or the first
        sample of a vector); None when the vector is empty."""
        data = self.api("query", {"query": expr})
        result = data["result"]
        if data["resultType"] == "scalar":
            return float(result[1])
        if data["resultType"] == "vector" and result:
            return float(result[0]["value"][1])
        return None

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets (job, scrapeUrl, health, lastError): why a series is
        missing."""
        active: list[dict[str, Any]] = self.api("targets", {"state": "active"})["activeTargets"]
        return active


def start(
    targets: Mapping[str, Sequence[str]],
    directory: Path,
    port: int = 0,
    scrape_interval: str = DEFAULT_SCRAPE_INTERVAL,
    rule_files: Sequence[str | Path] = (),
    ready_timeout: float = 30.0,
) -> Prometheus:
    """Write a config for ``targets`` in ``directory``, start Prometheus on
    ``127.0.0.1:port`` (0: a free port) with its TSDB in ``directory/data``, and return it
    once ready. Raises :class:`PrometheusError` when it is missing or does not come up."""
    binary = require_binary("prometheus")
    directory.mkdir(parents=True, exist_ok=True)
    cfg = write_config(directory / "prometheus.yml", targets, scrape_interval, rule_files)
    prom = Prometheus(port or free_port(), directory, cfg)
    prom.launch(binary)
    prom.wait_ready(ready_timeout)
    return prom
