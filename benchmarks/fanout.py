"""The ``fanout_1000`` scenario: one publisher -> ``--subscribers`` subscribers on one topic.

Runs the generator processes of :mod:`benchmarks.fanout_generator` against one broker and
turns what they measured, and the broker's CPU over the run, into deliveries/s, deliveries per
broker CPU-second and latency percentiles.
"""

from __future__ import annotations

import argparse
import array
import multiprocessing as mp
import time
from typing import Any

from bayou.processes import stop_processes
from benchmarks import fanout_generator as gen
from benchmarks.brokers import Broker, node_cpu
from benchmarks.procfs import process_cpu_deltas
from benchmarks.procs import expect_reports, shares
from benchmarks.stats import percentile


def run_fanout(broker: Broker, args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    """One publisher, ``--subscribers`` subscribers on one topic, in generator processes."""
    ctx = mp.get_context("fork")
    results: mp.Queue[Any] = ctx.Queue()  # the subscriber processes
    pub_results: mp.Queue[Any] = ctx.Queue()  # the publisher process
    warm, start, stop = ctx.Event(), ctx.Event(), ctx.Event()
    k = args.fanout_procs
    counters = ctx.RawArray("q", k)
    p = gen.FanoutParams(
        host="127.0.0.1",
        port=broker.port,
        topic=f"bench/{run_id}/fan",
        qos=args.fanout_qos,
        subscribers=args.subscribers,
        sub_procs=k,
        messages=args.fanout_messages,
        warmup=args.fanout_warmup,
        window=args.fanout_window,
        batch=args.fanout_window,
        payload_size=args.payload,
        deadline_s=args.deadline,
        client_prefix=f"bench-{run_id}",
    )
    procs = [
        ctx.Process(
            target=gen.fanout_subscriber_main,
            args=(p, i, n, counters, results, stop),
            daemon=True,
        )
        for i, n in enumerate(shares(args.subscribers, k))
    ]
    procs.append(
        ctx.Process(
            target=gen.fanout_publisher_main,
            args=(p, counters, pub_results, warm, start),
            daemon=True,
        )
    )
    for proc in procs:
        proc.start()
    try:
        t_conn = time.monotonic()
        expect_reports(results, "ready", k, 120.0, "connected and subscribed")
        expect_reports(pub_results, "ready", 1, 30.0, "publisher connected")
        connect_s = time.monotonic() - t_conn
        warm.set()
        expect_reports(pub_results, "warm", 1, 60.0, "warm-up")
        nodes0 = node_cpu(broker)
        cpu0 = broker.cpu()
        start.set()
        done = expect_reports(pub_results, "result", 1, args.deadline + 30.0, "publisher done")
        pub: gen.PublisherResult = done[-1]
        cpu1 = broker.cpu()
        nodes1 = node_cpu(broker)
        stop.set()
        subs: list[gen.SubscriberResult] = list(
            expect_reports(results, "result", k, 60.0, "subscriber results").values()
        )
    finally:
        warm.set()
        start.set()
        stop.set()
        stop_processes(procs, 5.0, sig=None)
    lat = array.array("q")
    for r in subs:
        a = array.array("q")
        a.frombytes(r.latencies_ns)
        lat.extend(a)
    lat_sorted = sorted(lat)
    delivered = sum(r.delivered for r in subs)
    expected = pub.sent * args.subscribers
    span_s = (pub.t_end_ns - pub.t_start_ns) / 1e9
    broker_cpu = cpu1["broker_cpu_s"] - cpu0["broker_cpu_s"]
    out: dict[str, Any] = {
        "messages": pub.sent,
        "subscribers": args.subscribers,
        "qos": args.fanout_qos,
        "publisher_acks": pub.acks,
        "sent": expected,  # deliveries expected: messages x subscribers
        "completed": delivered,
        "lost_or_cut": expected - delivered,
        "seconds": round(span_s, 3),
        "connect_s": round(connect_s, 3),
        "msgs_per_s": round(delivered / span_s, 1) if span_s > 0 else 0.0,
        "broker_cpu_s": round(broker_cpu, 3),
        "msgs_per_broker_cpu_s": round(delivered / broker_cpu, 1) if broker_cpu > 0 else None,
        "p50_ms": round(percentile(lat_sorted, 0.50), 3),
        "p99_ms": round(percentile(lat_sorted, 0.99), 3),
        "max_ms": round(lat_sorted[-1] / 1e6, 3) if lat_sorted else None,
        "stalled": pub.stalled,
        "timed_out": pub.timed_out,
    }
    if nodes0 is not None and nodes1 is not None:
        out["process_cpu_s"] = process_cpu_deltas(nodes0, nodes1)
    if "kafka_cpu_s" in cpu0:
        kafka_cpu = cpu1["kafka_cpu_s"] - cpu0["kafka_cpu_s"]
        out["kafka_cpu_s"] = round(kafka_cpu, 3)
        total = broker_cpu + kafka_cpu
        out["msgs_per_cpu_s_incl_kafka"] = round(delivered / total, 1) if total > 0 else None
    return out
