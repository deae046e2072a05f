"""The ``offline_sessions`` scenario: broker RSS per offline persistent session, and per message
queued for one."""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks import sessions_generator as gen
from benchmarks.brokers import Bayou, Broker
from benchmarks.reconnect import create_sessions, publish_each, reconnect_all


def run_offline(broker: Broker, args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    """``offline_sessions``: RSS per offline persistent session, and with a message queued each.

    Starts from a fresh broker process (mosquitto restarted; Bayou: the ingress restarted on
    the same Kafka), so memory earlier scenarios freed does not hide what the sessions cost.
    """
    n = args.sessions
    settle = args.sessions_settle
    ids = gen.device_ids(f"off-{run_id}", n)
    first_restart_s = broker.restart()
    time.sleep(settle)
    rss_before = broker.rss_kib()
    create_s, _ = create_sessions(broker, ids, args.sessions_procs, 600.0)
    time.sleep(settle)
    rss_offline = broker.rss_kib()
    cpu0 = broker.cpu()
    pub_s = publish_each(broker, [gen.device_topic(c) for c in ids], 1, args, 300.0)
    cpu1 = broker.cpu()
    time.sleep(settle)
    rss_queued = broker.rss_kib()
    # A second message each: growth that repeats is per message; what does not was one-off
    # (allocator arenas, the producer's buffers warming up).
    publish_each(broker, [gen.device_topic(c) for c in ids], 1, args, 300.0, first_number=1)
    time.sleep(settle)
    rss_queued2 = broker.rss_kib()
    out: dict[str, Any] = {
        "sessions": n,
        "fresh_start_s": round(first_restart_s, 3),
        "create_s": round(create_s, 3),
        "sessions_per_s": round(n / create_s, 1) if create_s > 0 else None,
        "rss_before_kib": rss_before,
        "rss_offline_kib": rss_offline,
        "kib_per_offline_session": round((rss_offline - rss_before) / n, 3),
        "publish_s": round(pub_s, 3),
        "publish_broker_cpu_s": round(cpu1["broker_cpu_s"] - cpu0["broker_cpu_s"], 3),
        "rss_queued_kib": rss_queued,
        "kib_per_queued_message": round((rss_queued - rss_offline) / n, 3),
        "rss_queued_2nd_kib": rss_queued2,
        "kib_per_queued_message_2nd": round((rss_queued2 - rss_queued) / n, 3),
    }
    if isinstance(broker, Bayou):
        # A fresh node: what the sessions cost once materialised from bayou.sessions alone.
        out["restart_s"] = round(broker.restart_ingress(), 3)
        time.sleep(settle)
        rss_restarted = broker.rss_kib()
        out["rss_restarted_kib"] = rss_restarted
        out["kib_per_session_after_restart"] = round((rss_restarted - rss_before) / n, 3)
    if args.sessions_sample:
        # Do the offline devices get their message? (On Bayou: from Kafka, after the restart.)
        sample = reconnect_all(broker, ids[: args.sessions_sample], 2, 1, args.reconnect_deadline)
        out["sample"] = {
            k: sample[k]
            for k in (
                "sessions",
                "complete",
                "missing",
                "duplicates",
                "unexpected",
                "seconds",
                "session_present",
            )
        }
    return out
