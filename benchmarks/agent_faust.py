"""The stock faust-streaming side of ``agent_count``: :mod:`benchmarks.faust_count` in a real
``faust worker`` process, over the same preloaded input as the other two sides.

Faust reports no progress of its own, so the harness reads the committed offsets of the Faust
app's consumer group (the app commits every 0.5 s) every 0.25 s with a confluent-kafka consumer
that never joins the group. Timing starts at the first reading with anything committed (which
also excludes Faust's start-up and group join, ``join_s``) and ends at the first reading with at
least ``n`` records committed: ``records/s`` = records committed between those two readings ÷
the time between them; CPU seconds of the worker process (``/proc``) over the same span. ``n``
(``--faust-records``, 20,000 by default) is far below the other sides' 200,000: at Faust's rate
the whole input would take minutes, and the rate is steady well before 20,000.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bayou.processes import stop_process
from benchmarks import agent_data as data
from benchmarks.brokers import log_tail
from benchmarks.procfs import tree_cpu_s

REPO = Path(__file__).resolve().parent.parent
POLL_S = 0.25


def _committed(consumer: Any, topic: str, partitions: int) -> int:
    from confluent_kafka import TopicPartition

    tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=5)
    return sum(max(tp.offset, 0) for tp in tps)


def run_faust(
    bootstrap: str,
    topic: str,
    partitions: int,
    run_id: str,
    n: int,
    workdir: Path,
    deadline: float,
) -> dict[str, Any]:
    """One stock Faust worker over ``topic`` until ``n`` records are committed (module docs)."""
    from confluent_kafka import Consumer

    faust_bin = shutil.which("faust", path=str(Path(sys.executable).parent)) or "faust"
    app_id = f"bench_faust_{run_id.replace('.', '_')}"
    env = dict(os.environ)
    env.update(
        BENCH_FAUST_APP=app_id,
        BENCH_FAUST_BROKER=bootstrap,
        BENCH_FAUST_TOPIC=topic,
        BENCH_FAUST_DATADIR=str(workdir / f"faust-{run_id}"),
    )
    log = workdir / f"faust-{run_id}.log"
    cmd = [faust_bin, "-A", "benchmarks.faust_count", "worker", "-l", "warn", "--without-web"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    group = Consumer({"bootstrap.servers": bootstrap, "group.id": app_id})
    t_spawn = time.monotonic()
    first: tuple[float, int, float] | None = None  # (time, committed, cpu)
    last: tuple[float, int, float] | None = None
    try:
        while time.monotonic() < t_spawn + deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"faust worker exited with code {proc.returncode}; log {log}:\n" + log_tail(log)
                )
            done = _committed(group, topic, partitions)
            now, cpu = time.monotonic(), tree_cpu_s(proc.pid)[0]
            if done > 0 and first is None:
                if done >= n:
                    raise RuntimeError(f"faust committed {done} records at once: raise n ({n})")
                first = (now, done, cpu)
            elif first is not None and done >= n:
                last = (now, done, cpu)
                break
            time.sleep(POLL_S)
    finally:
        group.close()
        stop_process(proc, timeout=30.0)
    if first is None or last is None:
        return {"records": 0 if first is None else first[1], "timed_out": True}
    seconds, records, cpu = last[0] - first[0], last[1] - first[1], last[2] - first[2]
    return {
        "records": records,
        "join_s": round(first[0] - t_spawn, 3),
        "seconds": round(seconds, 3),
        "records_per_s": data.rate(records, seconds),
        "cpu_s": round(cpu, 3),
        "records_per_cpu_s": data.rate(records, cpu),
        "timed_out": False,
    }
