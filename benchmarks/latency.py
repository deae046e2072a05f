"""The ``e2e_latency`` scenario of ``python -m benchmarks.run``: publish -> agent -> command.

DESIGN §9: "publish -> agent -> command delivered to the device, p99 under 20 ms at 1,000 msg/s
on the embedded stack". For each run, on its own fresh embedded Kafka (Tansu, memory storage,
a free port of 127.0.0.1), the scenario starts a real ``bayou ingress`` and a real ``bayou worker
--agents benchmarks.agents_command`` (free ports, stopped by process id after the run; the worker
is ready once it has its partitions). The app's one agent answers every reading on
``sensors/<device>/telemetry`` with a QoS 1 command on ``devices/<device>/commands`` that echoes
the reading's sequence number and send stamp.

One generator process (raw sockets, :mod:`benchmarks.codec`; never a broker's process) holds
``--e2e-devices`` device connections, each subscribed at QoS 1 to its own command topic, and one
publisher connection that sends QoS 1 readings round-robin over the devices, paced against the
clock at ``--e2e-rate`` msg/s in all (message *i* is due at ``t0 + i / rate``; a message is
stamped with ``time.monotonic_ns()`` as it is written, one clock for every process of the host).
The first ``--e2e-warmup`` seconds are not counted; then ``--e2e-seconds`` are measured, and
the generator waits up to ``--e2e-drain`` seconds for the last commands.

Latency = the command's arrival at its device - the reading's send stamp. The command also
carries the worker's clock when the agent ran, which splits it into publish -> agent and
agent -> device; the publisher's PUBACKs (Kafka acknowledged the reading) give a third leg.
CPU seconds of the ingress, the worker, Tansu and the generator are read over the measured
span (first to last measured send), and the machine's busy CPU over it (``other_cpu_s`` is what
neither the stack nor the generator used: other work on the machine); the worker's batches over
it from its metrics endpoint; p50/p99 per 5 s of send time show a drift during the run.
Every command must arrive exactly once: a missing one is an error of the run, not left out.

The pieces: :mod:`benchmarks.e2e_generator` (the generator process), :mod:`benchmarks.e2e_stack`
(Kafka, ingress, worker), :mod:`benchmarks.e2e_figures` (a run's figures, the JSON entry) and
:mod:`benchmarks.e2e_console` (what is printed); this module runs them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from bayou.processes import stop_process
from benchmarks.brokers import HOST
from benchmarks.console import say
from benchmarks.e2e_console import print_e2e_table, run_line
from benchmarks.e2e_figures import e2e_entry, percentiles_ms, run_figures, timeline
from benchmarks.e2e_generator import (
    E2EParams,
    E2EResult,
    device_of_topic,
    due_count,
    generator_main,
    reading_payload,
)
from benchmarks.e2e_stack import E2EStack, machine_busy_s
from benchmarks.procs import expect_report

# What the scenario's callers (benchmarks.cli, benchmarks.report, the tests) use of it and
# its pieces.
__all__ = [
    "device_of_topic",
    "due_count",
    "e2e_entry",
    "machine_busy_s",
    "percentiles_ms",
    "print_e2e_table",
    "reading_payload",
    "run_e2e_once",
    "run_e2e_scenario",
    "timeline",
]


def run_e2e_once(stack: E2EStack, args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    """One measured run against a started stack (module docs)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    results: mp.Queue[Any] = ctx.Queue()
    start = ctx.Event()
    p = E2EParams(
        host=HOST,
        port=stack.mqtt_port,
        devices=args.e2e_devices,
        rate=args.e2e_rate,
        warmup_s=args.e2e_warmup,
        seconds=args.e2e_seconds,
        drain_s=args.e2e_drain,
        payload_size=args.payload,
        client_prefix=f"e2e-{run_id}",
    )
    proc = ctx.Process(target=generator_main, args=(p, results, start), daemon=True)
    proc.start()
    try:
        expect_report(results, "ready", 60.0, "connected and subscribed")
        stack.check_alive()
        start.set()
        expect_report(results, "measuring", args.e2e_warmup + 30.0, "the first measured send")
        cpu0, m0 = stack.cpu(), stack.worker_metrics_now()
        expect_report(results, "sent", args.e2e_seconds + 30.0, "the last send")
        cpu1, m1 = stack.cpu(), stack.worker_metrics_now()
        res: E2EResult = expect_report(results, "result", args.e2e_drain + 30.0, "its result")
        stack.check_alive()
    finally:
        start.set()
        # It ends by itself once its result is sent; still running after 10 s, it is killed.
        stop_process(proc, 10.0, sig=None)
    return run_figures(res, cpu0, cpu1, m0, m1)


def run_e2e_scenario(
    title: str,
    args: argparse.Namespace,
    workdir: Path,
    errors: dict[str, str],
    kafka_kind: str = "embedded",
) -> dict[str, Any]:
    """``e2e_latency`` (module docs) on the Kafka of ``kafka_kind``
    (:mod:`benchmarks.kafka_backends`). A failed or lossy run is recorded in ``errors`` (keys
    ``e2e_latency@real/...`` on real Kafka).

    Each repeat gets a fresh stack: the embedded broker slows down with every batch it stores
    (docs/performance.md), so a second run on the same Kafka would measure an older broker.
    """
    runs: list[dict[str, Any]] = []
    at = "" if kafka_kind == "embedded" else f"@{kafka_kind}"
    kafka_name = "Tansu" if kafka_kind == "embedded" else f"Apache Kafka ({args.kafka_brokers})"
    for rep in range(args.e2e_repeat):
        stack = E2EStack(workdir / f"e2e_latency{at}-{rep}", kafka_kind, args.kafka_brokers)
        try:
            say(f"e2e_latency{at} run {rep + 1}: starting {kafka_name}, bayou ingress, worker ...")
            stack.start()
            r = run_e2e_once(stack, args, f"{rep}-{os.getpid()}")
            r["start_s"] = dict(stack.start_s)
        except (RuntimeError, OSError, TimeoutError) as exc:
            say(f"e2e_latency{at} run {rep + 1} failed: {exc}")
            errors[f"e2e_latency{at}/{rep}"] = str(exc)
            continue
        finally:
            stack.stop()
        runs.append(r)
        say(run_line(rep, args.e2e_repeat, r))
        lost = r["missing"] + r["warmup_missing"] + r["pubacks_missing"]
        if lost or r["duplicates"] or r["misrouted"]:
            errors[f"e2e_latency{at}/{rep}/delivery"] = (
                f"{r['missing']} of {r['sent']} commands missing (+{r['warmup_missing']} of "
                f"the warm-up), {r['pubacks_missing']} readings not PUBACKed, "
                f"{r['duplicates']} duplicates, {r['misrouted']} misrouted; first missing "
                f"seqs {r['missing_seqs']}"
            )
    extra: dict[str, Any] = {"kafka": kafka_kind}
    if kafka_kind == "real":
        extra["kafka_brokers"] = args.kafka_brokers
        extra["replication_factor"] = min(3, args.kafka_brokers)
    return e2e_entry(runs, args, title, extra)
