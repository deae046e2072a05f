"""Several ingress node processes sharing one MQTT port (SO_REUSEPORT), one per core.

State lives in Kafka, so each process is simply another node (DESIGN §8): the kernel spreads
new connections over them, and takeover, sessions and retained messages work across them as
across machines.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from bayou.processes import die_with_parent, stop_processes
from bayou.settings import Settings


def run_node_group(settings: Settings, node_id: str) -> int:
    """Run ``settings.ingress_processes`` nodes until SIGINT/SIGTERM or one exits."""
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    children: list[subprocess.Popen[bytes]] = []
    base = settings.ingress_metrics_port
    for i in range(settings.ingress_processes):
        # The children read their settings themselves; this only passes the environment on.
        env = dict(os.environ)
        env["BAYOU_INGRESS_CHILD"] = "1"
        env["BAYOU_INGRESS_PROCESSES"] = str(settings.ingress_processes)
        env["BAYOU_INGRESS_METRICS_PORT"] = str(base + i if base else 0)
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "bayou.cli", "ingress", "--node-id", f"{node_id}-{i + 1}"],
                env=env,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
        )
    code = 0
    while not stop:
        for proc in children:
            rc = proc.poll()
            if rc is not None:
                print(f"bayou ingress: node process {proc.pid} exited with {rc}", file=sys.stderr)
                code = rc or 1
                stop = True
        time.sleep(0.2)
    stop_processes(children, timeout=15.0)
    return code
