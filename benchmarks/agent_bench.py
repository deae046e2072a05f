"""The agent scenarios of ``python -m benchmarks.run``: ``agent_count`` and ``agent_window_mean``.

Each scenario starts its own embedded Kafka (Tansu, memory storage) on a free port of
127.0.0.1 (with ``--kafka real|both`` ``agent_count`` also on a 3-broker Apache Kafka, every
topic with replication factor 3: :mod:`benchmarks.kafka_backends`), preloads the input topic
(4 partitions, :func:`benchmarks.agent_data.records`) once, then runs, interleaved
``--agent-repeat`` times (which side goes first alternates):

- ``worker``: a real ``bayou worker --agents benchmarks.agents_count`` (or ``agents_window``)
  process, fresh app name (so a fresh changelog topic), fresh state dir, fresh consumer group.
  Its metrics endpoint is read every 50 ms until it is ready (``bayou_agent_ready`` = 1: it has
  its partitions and restored their state), then every 100 ms; consumption starts at ready
  (the midpoint of the last not-ready and the first ready reading) and ends when
  ``bayou_agent_records_in_total`` reached the record count (interpolated between readings).
  CPU seconds of the worker process (``/proc``) over the same span.
- ``hand_loop``: :mod:`benchmarks.agent_ref` in its own process, doing the same work by hand.

``agent_count`` then runs, once, stock faust-streaming doing the same work
(:mod:`benchmarks.agent_faust`, ``--faust-records``; 0 skips it): ``faust_ratio`` = its
records/s ÷ the hand loop's.

The consumer-group join (about 5 s on the embedded broker) is measured separately and excluded
from both. ``ratio`` = worker records/s ÷ hand loop records/s (medians; DESIGN §9 asks
``agent_count`` ≥ 0.8).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bayou.metrics_scrape import scrape
from bayou.processes import stop_process
from benchmarks import agent_data as data
from benchmarks.brokers import HOST, find_bayou, log_tail
from benchmarks.console import say
from benchmarks.kafka_backends import start_kafka
from benchmarks.procfs import tree_cpu_s
from benchmarks.stats import medians

REPO = Path(__file__).resolve().parent.parent
PARTITIONS = 4
READY = "bayou_agent_ready"
RECORDS_IN = "bayou_agent_records_in_total"
WINDOWS = "bayou_agent_window_results_total"


def preload(bootstrap: str, topic: str, args: argparse.Namespace, devices: int, span: float,
            t0: float, rf: int = 1) -> dict[str, Any]:  # fmt: skip
    """Create ``topic`` (4 partitions, replication factor ``rf``) and write the input records;
    seconds taken."""
    from confluent_kafka import Producer

    from kafkaio.admin import ensure_topics

    asyncio.run(ensure_topics(bootstrap, [topic], PARTITIONS, rf))
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            "acks": "all",
        }
    )
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    t = time.monotonic()
    now_ms = str(int(time.time() * 1000)).encode()
    for rec in data.records(args.agent_records, devices, t0, span, PARTITIONS, args.payload):
        headers: list[tuple[str, str | bytes | None]] = [
            ("mqtt.topic", rec.mqtt_topic.encode()),
            ("bayou.ingress_ts", now_ms),
        ]
        while True:
            try:
                producer.produce(
                    topic, rec.value, rec.key.encode(), partition=rec.partition,
                    headers=headers, on_delivery=on_delivery,
                )  # fmt: skip
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(60.0)
    if left or errors:
        raise RuntimeError(f"preload failed: {left} undelivered, errors {errors[:3]}")
    return {"records": args.agent_records, "seconds": round(time.monotonic() - t, 3)}


def _scrape(port: int) -> dict[str, float] | None:
    samples = scrape(port, HOST, timeout=1.0)
    if samples is None:
        return None
    # Records and windows are counted per agent and window: their sums are the worker's.
    totals = {n: v for n in (RECORDS_IN, WINDOWS) if (v := samples.total(n)) is not None}
    return samples.values([READY]) | totals


def run_worker(
    bootstrap: str,
    module: str,
    topic: str,
    run_id: str,
    n: int,
    workdir: Path,
    deadline: float,
    expect_windows: int | None = None,
    kafka_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One ``bayou worker --agents <module>`` run over the preloaded topic (module docs)."""
    from bayou.net import free_port

    port = free_port(HOST)
    app_name = run_id.replace(".", "_")
    env = dict(os.environ)
    env.update(
        BAYOU_KAFKA_BOOTSTRAP=bootstrap,
        BAYOU_WORKER_METRICS_PORT=str(port),
        BAYOU_METRICS_HOST=HOST,
        BAYOU_STATE_DIR=str(workdir / f"state-{run_id}"),
        **{data.ENV_APP: app_name, data.ENV_TOPIC: topic, data.ENV_OUTPUT: f"{topic}.out"},
    )
    # The Kafka's own settings (replication factor, fetch wait: benchmarks.kafka_backends).
    env.update(kafka_env or {})
    log = workdir / f"worker-{run_id}.log"
    # The child has its own copy of the descriptor: close ours.
    with open(log, "wb") as out_file:
        proc = subprocess.Popen(
            [find_bayou(), "worker", "--agents", module],
            cwd=REPO,
            env=env,
            stdout=out_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    t_spawn = time.monotonic()
    t_ready: float | None = None
    cpu_ready = 0.0
    last_not_ready = t_spawn
    samples: list[tuple[float, float]] = []
    t_done: float | None = None
    cpu_done = 0.0
    windows = 0.0
    t_windows: float | None = None
    end = t_spawn + deadline
    try:
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"bayou worker exited with code {proc.returncode}; log {log}:\n" + log_tail(log)
                )
            m = _scrape(port)
            now = time.monotonic()
            if t_ready is None:
                if m is not None and m.get(READY) == 1.0:
                    t_ready = (last_not_ready + now) / 2
                    cpu_ready = tree_cpu_s(proc.pid)[0]
                    samples.append((now, m.get(RECORDS_IN, 0.0)))
                else:
                    last_not_ready = now
                    time.sleep(0.05)
                continue
            if m is not None and t_done is None:
                samples.append((now, m.get(RECORDS_IN, 0.0)))
                if samples[-1][1] >= n:
                    t_done = data.crossing_time(samples, n)
                    cpu_done = tree_cpu_s(proc.pid)[0]
            if t_done is not None:
                windows = (m or {}).get(WINDOWS, windows)
                if expect_windows is None or windows >= expect_windows:
                    t_windows = now
                    break
                # The last windows close as the watermark moves on with the wall clock.
                if now - t_done > data.WINDOW_SIZE + data.WINDOW_GRACE + 10:
                    break
            time.sleep(0.1)
        cpu_end = tree_cpu_s(proc.pid)[0]
    finally:
        stop_process(proc, timeout=20.0)
    seconds = None if t_done is None or t_ready is None else t_done - t_ready
    cpu = cpu_done - cpu_ready if t_done is not None else None
    out: dict[str, Any] = {
        "records": int(samples[-1][1]) if samples else 0,
        "join_s": None if t_ready is None else round(t_ready - t_spawn, 3),
        "seconds": None if seconds is None else round(seconds, 3),
        "records_per_s": data.rate(n, seconds),
        "cpu_s": None if cpu is None else round(cpu, 3),
        "records_per_cpu_s": data.rate(n, cpu),
        "cpu_s_whole_process": round(cpu_end, 3),
        "timed_out": t_done is None,
    }
    if expect_windows is not None:
        out["windows_emitted"] = int(windows)
        out["windows_expected"] = expect_windows
        out["windows_done_s"] = (
            None if t_windows is None or t_ready is None else round(t_windows - t_ready, 3)
        )
    return out


def run_hand_loop(
    kind: str,
    bootstrap: str,
    topic: str,
    run_id: str,
    n: int,
    workdir: Path,
    deadline: float,
    rf: int = 1,
) -> dict[str, Any]:
    """One :mod:`benchmarks.agent_ref` run in its own process."""
    from kafkaio.admin import ensure_topics

    changelog = f"bench.ref.changelog.{run_id}"
    output = f"{topic}.ref.out"
    asyncio.run(ensure_topics(bootstrap, [changelog], PARTITIONS, rf, frozenset([changelog])))
    asyncio.run(ensure_topics(bootstrap, [output], PARTITIONS, rf))
    cmd = [
        sys.executable, "-m", "benchmarks.agent_ref", kind, "--bootstrap", bootstrap,
        "--topic", topic, "--group", f"bench-ref-{run_id}", "--changelog", changelog,
        "--output", output, "--state-dir", str(workdir / f"ref-{run_id}"), "--records", str(n),
        "--deadline", str(deadline),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        out, err = proc.communicate(timeout=deadline + 30.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError("hand loop did not finish in time") from None
    if proc.returncode != 0:
        tail = "\n".join(err.decode(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"hand loop exited with code {proc.returncode}:\n{tail}")
    r: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    r["records_per_s"] = data.rate(n, r["seconds"])
    r["records_per_cpu_s"] = data.rate(n, r["cpu_s"])
    return r


_MEDIANS = [
    "records_per_s",
    "records_per_cpu_s",
    "seconds",
    "cpu_s",
    "join_s",
    "windows_emitted",
    "windows_done_s",
    "late",
]


def summarize_agent(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the figures over the repeats; the raw runs kept alongside."""
    out: dict[str, Any] = dict(medians(runs, _MEDIANS))
    out["timed_out_runs"] = sum(1 for r in runs if r.get("timed_out"))
    out["runs"] = runs
    return out


def agent_entry(
    name: str, title: str, worker: list[dict[str, Any]], hand: list[dict[str, Any]]
) -> dict[str, Any]:
    """The JSON entry of an agent scenario: medians per side, the ratio, the target."""
    entry: dict[str, Any] = {"name": name, "title": title}
    entry["worker"] = summarize_agent(worker) if worker else None
    entry["hand_loop"] = summarize_agent(hand) if hand else None
    w, h = entry["worker"] or {}, entry["hand_loop"] or {}

    def ratio(a: Any, b: Any) -> float | None:
        return round(a / b, 3) if isinstance(a, int | float) and b else None

    entry["ratio"] = ratio(w.get("records_per_s"), h.get("records_per_s"))
    entry["ratio_means"] = "bayou worker records/s / hand-written aiokafka loop records/s"
    entry["cpu_ratio"] = ratio(w.get("records_per_cpu_s"), h.get("records_per_cpu_s"))
    entry["ratios_per_repeat"] = [
        ratio(a.get("records_per_s"), b.get("records_per_s"))
        for a, b in zip(worker, hand, strict=False)
    ]
    entry["target"] = {"ratio_at_least": 0.8} if name == "agent_count" else None
    if entry["target"] is not None and entry["ratio"] is not None:
        entry["target_met"] = entry["ratio"] >= 0.8
    return entry


def run_agent_scenario(
    name: str,
    title: str,
    args: argparse.Namespace,
    workdir: Path,
    errors: dict[str, str],
    kafka_kind: str = "embedded",
) -> dict[str, Any]:
    """``agent_count`` or ``agent_window_mean`` (module docs) on the Kafka of ``kafka_kind``
    (:mod:`benchmarks.kafka_backends`). A failed run is left out, its reason recorded in
    ``errors`` (keys end in ``@real`` on real Kafka)."""
    from kafkaio.admin import ensure_topics

    window = name == "agent_window_mean"
    devices = args.window_devices if window else args.agent_devices
    module = "benchmarks.agents_window" if window else "benchmarks.agents_count"
    kind = "window" if window else "count"
    n = args.agent_records
    # Event times an hour back, 40 s of them (4 windows of 10 s), aligned to the windows.
    t0 = float(int(time.time()) // 10 * 10 - 3600)
    span = 4 * data.WINDOW_SIZE
    expect = data.expected_windows(n, devices, t0, span) if window else None
    at = "" if kafka_kind == "embedded" else f"@{kafka_kind}"
    scen_dir = workdir / f"{name}{at}"
    try:
        kafka = start_kafka(kafka_kind, scen_dir, HOST, args.kafka_brokers)
    except RuntimeError as exc:
        say(f"{name}{at} failed: {exc}")
        errors[f"{name}{at}"] = str(exc)
        return {**agent_entry(name, title, [], []), "kafka": kafka_kind}
    bootstrap, rf = kafka.bootstrap, kafka.replication_factor
    worker_runs: list[dict[str, Any]] = []
    hand_runs: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    try:
        topic = f"bench.{name}.in"
        asyncio.run(ensure_topics(bootstrap, [f"{topic}.out"], PARTITIONS, rf))
        extra["preload"] = preload(bootstrap, topic, args, devices, span, t0, rf)
        say(
            f"{name}: {n:,} records over {devices:,} devices preloaded in "
            f"{extra['preload']['seconds']:.1f} s"
        )
        for rep in range(args.agent_repeat):
            order = ["hand_loop", "worker"] if rep % 2 == 0 else ["worker", "hand_loop"]
            for side in order:
                run_id = f"{name}.{side}.{rep}.{os.getpid()}"
                try:
                    if side == "worker":
                        r = run_worker(bootstrap, module, topic, run_id, n, scen_dir,
                                       args.agent_deadline, expect, kafka.env())  # fmt: skip
                        worker_runs.append(r)
                    else:
                        r = run_hand_loop(kind, bootstrap, topic, run_id, n, scen_dir,
                                          args.agent_deadline, rf)  # fmt: skip
                        hand_runs.append(r)
                except (RuntimeError, OSError, ValueError) as exc:
                    say(f"{name}{at} {side} run {rep + 1} failed: {exc}")
                    errors[f"{name}{at}/{side}/{rep}"] = str(exc)
                    continue
                say(_run_line(f"{name}{at}", side, rep, args.agent_repeat, r))
        faust_n = args.faust_records
        if not window and faust_n > 0 and kafka_kind == "embedded":
            # Stock faust-streaming doing the same work, once (it is ~20x slower: fewer records;
            # on the embedded broker only: it is there to compare libraries, not brokers).
            from benchmarks.agent_faust import run_faust

            run_id = f"{name}.faust.{os.getpid()}"
            try:
                r = run_faust(bootstrap, topic, PARTITIONS, run_id, faust_n, scen_dir,
                              args.agent_deadline)  # fmt: skip
                extra["faust"] = r
                say(_run_line(name, "faust", 0, 1, r))
            except (RuntimeError, OSError, ValueError) as exc:
                say(f"{name} faust run failed: {exc}")
                errors[f"{name}/faust"] = str(exc)
    except (RuntimeError, OSError, TimeoutError) as exc:
        say(f"{name}{at} failed: {exc}")
        errors[f"{name}{at}"] = str(exc)
    finally:
        kafka.stop()
    entry = agent_entry(name, title, worker_runs, hand_runs)
    entry.update(records=n, devices=devices, partitions=PARTITIONS, payload=args.payload, **extra)
    entry.update(kafka=kafka_kind, replication_factor=rf)
    if kafka_kind == "real":
        entry["kafka_brokers"] = args.kafka_brokers
    hand_rate = (entry["hand_loop"] or {}).get("records_per_s")
    faust_rate = extra.get("faust", {}).get("records_per_s")
    if hand_rate and faust_rate:
        entry["faust_ratio"] = round(faust_rate / hand_rate, 3)
        entry["faust_ratio_means"] = "stock faust-streaming records/s / hand loop records/s"
    if window:
        entry["window"] = {"size_s": data.WINDOW_SIZE, "grace_s": data.WINDOW_GRACE,
                           "event_time_span_s": span, "expected_results": expect}  # fmt: skip
    return entry


def _run_line(name: str, side: str, rep: int, repeats: int, r: dict[str, Any]) -> str:
    def f(v: Any, spec: str = ",.0f") -> str:
        return "-" if v is None else format(v, spec)

    line = (
        f"{name:<18} {side:<9} run {rep + 1}/{repeats}: {f(r.get('records_per_s'))} rec/s  "
        f"{f(r.get('records_per_cpu_s'))} rec/CPU-s  {f(r.get('seconds'), '.2f')} s  "
        f"CPU {f(r.get('cpu_s'), '.2f')} s  join {f(r.get('join_s'), '.2f')} s"
    )
    if "windows_emitted" in r:
        line += f"  windows {r['windows_emitted']:,}"
        if "windows_expected" in r:
            line += f"/{r['windows_expected']:,}"
    if r.get("late"):
        line += f"  late {r['late']:,}"
    return line + ("  TIMED OUT" if r.get("timed_out") else "")
