"""The publisher -> subscriber and publish -> acknowledgement scenarios (``qos0_pub_sub``,
``qos1_pub_sub``, ``qos1_puback``, ``qos2_pub_sub``, ``qos2_puback``, and on MQTT 5
``qos1_pub_sub_v5``, ``qos1_puback_v5``, ``qos1_shared_v5``): one run against one broker.

``--publishers`` generator processes (:mod:`benchmarks.load`) each own a publisher and, for
the pub/sub scenarios, a subscriber connection; messages/s, messages per broker CPU-second and
latency percentiles come from what they measured and the broker's CPU over the run.
"""

from __future__ import annotations

import argparse
import array
import multiprocessing as mp
import queue
import time
from typing import Any

from bayou.processes import stop_processes
from benchmarks.brokers import Broker, node_cpu
from benchmarks.load import WorkerParams, WorkerResult, worker_main
from benchmarks.procfs import process_cpu_deltas
from benchmarks.scenarios import Scenario
from benchmarks.stats import percentile


def run_pubsub(
    broker: Broker, sc: Scenario, args: argparse.Namespace, run_id: str
) -> dict[str, Any]:
    """One scenario against one broker: start the generator processes, measure, collect."""
    ctx = mp.get_context("fork")
    results: mp.Queue[Any] = ctx.Queue()
    start = ctx.Event()
    n = args.publishers
    per = [args.messages // n + (1 if i < args.messages % n else 0) for i in range(n)]
    params = [
        WorkerParams(
            index=i,
            host="127.0.0.1",
            port=broker.port,
            topic=f"bench/{run_id}/{i}",
            qos=sc.qos,
            with_subscriber=sc.with_subscriber,
            messages=per[i],
            window=args.window,
            batch=args.batch,
            payload_size=args.payload,
            deadline_s=args.deadline,
            warmup=args.warmup,
            rate=args.rate,
            client_prefix=f"bench-{run_id}",
            protocol=sc.protocol,
            share=f"g{i}" if sc.shared else "",
            # A shared subscription's group forms in seconds on Bayou: the warm-up waits.
            stall_s=20.0 if sc.shared else 5.0,
        )
        for i in range(n)
    ]
    procs = [ctx.Process(target=worker_main, args=(p, results, start), daemon=True) for p in params]
    for proc in procs:
        proc.start()
    try:
        ready = 0
        while ready < n:
            kind, idx, payload = results.get(timeout=60.0)
            if kind == "error":
                raise RuntimeError(f"generator {idx} failed before the run: {payload}")
            ready += 1
        nodes0 = node_cpu(broker)
        cpu0 = broker.cpu()
        t0 = time.monotonic()
        start.set()
        got: list[WorkerResult] = []
        while len(got) < n:
            kind, idx, payload = results.get(timeout=args.deadline + 30.0)
            if kind == "error":
                raise RuntimeError(f"generator {idx} failed: {payload}")
            got.append(payload)
        wall = time.monotonic() - t0
        cpu1 = broker.cpu()
        nodes1 = node_cpu(broker)
    except queue.Empty:
        raise RuntimeError("generator processes did not report in time") from None
    finally:
        start.set()
        # They end by themselves once started; any still running after 5 s is killed.
        stop_processes(procs, 5.0, sig=None)
    lat: list[int] = []
    for r in got:
        a = array.array("q")
        a.frombytes(r.latencies_ns)
        lat.extend(a)
    lat.sort()
    completed = sum(r.completed for r in got)
    sent = sum(r.sent for r in got)
    span_s = (max(r.t_end_ns for r in got) - min(r.t_start_ns for r in got)) / 1e9
    broker_cpu = cpu1["broker_cpu_s"] - cpu0["broker_cpu_s"]
    out: dict[str, Any] = {
        "sent": sent,
        "completed": completed,
        "lost_or_cut": sent - completed,
        "seconds": round(span_s, 3),
        "wall_s": round(wall, 3),
        "msgs_per_s": round(completed / span_s, 1) if span_s > 0 else 0.0,
        "broker_cpu_s": round(broker_cpu, 3),
        "msgs_per_broker_cpu_s": round(completed / broker_cpu, 1) if broker_cpu > 0 else None,
        "p50_ms": round(percentile(lat, 0.50), 3),
        "p99_ms": round(percentile(lat, 0.99), 3),
        "max_ms": round(lat[-1] / 1e6, 3) if lat else None,
        "stalled": any(r.stalled for r in got),
        "timed_out": any(r.timed_out for r in got),
    }
    if nodes0 is not None and nodes1 is not None:
        out["process_cpu_s"] = process_cpu_deltas(nodes0, nodes1)
    if "kafka_cpu_s" in cpu0:
        kafka_cpu = cpu1["kafka_cpu_s"] - cpu0["kafka_cpu_s"]
        out["kafka_cpu_s"] = round(kafka_cpu, 3)
        total = broker_cpu + kafka_cpu
        out["msgs_per_cpu_s_incl_kafka"] = round(completed / total, 1) if total > 0 else None
    return out
