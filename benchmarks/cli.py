"""The benchmark harness's command line: its options and ``main``, which starts the brokers,
runs the scenarios interleaved, and writes and prints the results.

``python -m benchmarks.run`` (``make bench``) runs :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import agent_bench, latency
from benchmarks.brokers import Bayou, Broker, BrokerError, Mosquitto
from benchmarks.connect_auth import run_connect_auth
from benchmarks.console import console
from benchmarks.fanout import run_fanout
from benchmarks.idle import run_idle
from benchmarks.kafka_backends import KAFKA_CHOICES, REAL_BAYOU, REAL_KAFKA_SCENARIOS, kafka_kinds
from benchmarks.offline import run_offline
from benchmarks.pubsub import run_pubsub
from benchmarks.reconnect import run_reconnect
from benchmarks.report import print_run, print_table
from benchmarks.results import ingest_targets, machine_info, scenario_entry
from benchmarks.scenarios import OPT_IN_SCENARIOS, SCENARIOS, broker_names

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
# Started at the beginning and kept for the whole run; the other variants (bayou-<N>p,
# bayou-kafka) only around their own scenarios.
MAIN_BROKERS = ("mosquitto", "bayou")
# One run of a broker scenario of this kind ("pubsub" also takes its Scenario: the QoS).
RUNS: dict[str, Callable[[Broker, argparse.Namespace, str], dict[str, Any]]] = {
    "idle": run_idle,
    "fanout": run_fanout,
    "offline": run_offline,
    "reconnect": run_reconnect,
    "auth": run_connect_auth,
}
# The help text (``--help``) is the harness's own description, as before the split.
DESCRIPTION = """Bayou benchmark harness: ``python -m benchmarks.run`` (``make bench``).

Runs each scenario against a private mosquitto and a Bayou ingress node on the embedded Kafka
(with --kafka real|both also on a 3-broker Apache Kafka), interleaved, and reports messages/s,
messages per broker CPU-second, latency percentiles and the Bayou/mosquitto ratio per broker
CPU-second. See docs/performance.md.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The harness options (``--help``), checked."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=DESCRIPTION)
    ap.add_argument("--messages", type=int, default=200_000, help="messages per run (total)")
    ap.add_argument("--publishers", type=int, default=2, help="generator processes (1 pub + 1 sub)")
    ap.add_argument("--window", type=int, default=200, help="max in flight per publisher")
    ap.add_argument("--batch", type=int, default=50, help="PUBLISH packets per socket write")
    ap.add_argument("--payload", type=int, default=100, help="payload bytes (>= 16)")
    ap.add_argument("--rate", type=float, default=0.0, help="msg/s per publisher; 0 = unpaced")
    ap.add_argument("--warmup", type=int, default=2000, help="warm-up messages per publisher")
    ap.add_argument("--deadline", type=float, default=15.0, help="seconds before a run is cut")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs per scenario (median)")
    fan = ap.add_argument_group("fanout_1000")
    fan.add_argument("--subscribers", type=int, default=1000, help="subscriber connections")
    fan.add_argument("--fanout-messages", type=int, default=300, help="messages published per run")
    fan.add_argument("--fanout-qos", type=int, choices=[0, 1], default=1, help="pub and sub QoS")
    fan.add_argument(
        "--fanout-window", type=int, default=10, help="messages whose deliveries may be outstanding"
    )
    fan.add_argument("--fanout-procs", type=int, default=4, help="subscriber generator processes")
    fan.add_argument("--fanout-warmup", type=int, default=5, help="warm-up messages (not counted)")
    idle = ap.add_argument_group("idle_memory")
    idle.add_argument("--idle-connections", type=int, default=10_000, help="idle clients")
    idle.add_argument("--idle-procs", type=int, default=4, help="generator processes holding them")
    idle.add_argument("--idle-keepalive", type=int, default=3600, help="CONNECT keep-alive, s")
    idle.add_argument("--idle-settle", type=float, default=2.0, help="s to wait before reading RSS")
    idle.add_argument("--idle-repeat", type=int, default=1, help="runs per broker")
    ses = ap.add_argument_group("offline_sessions and reconnect_1000")
    ses.add_argument("--sessions", type=int, default=10_000, help="offline persistent sessions")
    ses.add_argument("--sessions-procs", type=int, default=4, help="generator processes")
    ses.add_argument(
        "--sessions-sample", type=int, default=200, help="offline sessions reconnected to check"
    )
    ses.add_argument("--sessions-settle", type=float, default=2.0, help="s before each RSS reading")
    ses.add_argument("--reconnect-sessions", type=int, default=1000, help="sessions reconnecting")
    ses.add_argument(
        "--reconnect-messages", type=int, default=5, help="QoS 1 messages waiting per session"
    )
    ses.add_argument(
        "--reconnect-deadline", type=float, default=30.0, help="s before a reconnect run is cut"
    )
    ses.add_argument("--sessions-repeat", type=int, default=1, help="runs per broker")
    auth = ap.add_argument_group("connect_auth (opt-in)")
    auth.add_argument(
        "--auth-connects",
        type=int,
        default=2000,
        help="clients connecting per phase (with a password, then anonymous); runs: --repeat",
    )
    auth.add_argument(
        "--auth-full-check",
        action="store_true",
        help="Bayou: every password CONNECT gets the full argon2 check "
        "(BAYOU_AUTH_PASSWORD_CACHE_SIZE=0), as on a node that has just started",
    )
    ag = ap.add_argument_group("agent_count and agent_window_mean")
    ag.add_argument("--agent-records", type=int, default=200_000, help="input records per run")
    ag.add_argument("--agent-devices", type=int, default=1000, help="agent_count: device keys")
    ag.add_argument(
        "--window-devices", type=int, default=10_000, help="agent_window_mean: device keys"
    )
    ag.add_argument("--agent-repeat", type=int, default=3, help="interleaved runs per side")
    ag.add_argument("--agent-deadline", type=float, default=120.0, help="s before a run is cut")
    ag.add_argument(
        "--faust-records",
        type=int,
        default=20_000,
        help="agent_count: records for the stock faust-streaming side (run once); 0 = skip it",
    )
    e2e = ap.add_argument_group("e2e_latency")
    e2e.add_argument("--e2e-rate", type=float, default=1000.0, help="readings/s in all, paced")
    e2e.add_argument("--e2e-seconds", type=float, default=15.0, help="measured seconds per run")
    e2e.add_argument("--e2e-warmup", type=float, default=3.0, help="warm-up seconds (not counted)")
    e2e.add_argument("--e2e-devices", type=int, default=20, help="device connections")
    e2e.add_argument(
        "--e2e-drain", type=float, default=10.0, help="s to wait for the last commands"
    )
    e2e.add_argument("--e2e-repeat", type=int, default=1, help="runs, each on a fresh stack")
    ap.add_argument(
        "--ingress-processes",
        type=int,
        default=0,
        help="also run qos1_puback and fanout_1000 against Bayou with this many node processes "
        "(BAYOU_INGRESS_PROCESSES; broker 'bayou-<N>p'); 0 or 1 = not (the default)",
    )
    ap.add_argument(
        "--only", choices=["mosquitto", "bayou"], default=None, help="run one broker only"
    )
    ap.add_argument(
        "--kafka",
        choices=KAFKA_CHOICES,
        default="embedded",
        help="the Kafka under Bayou for " + ", ".join(REAL_KAFKA_SCENARIOS) + ": embedded "
        "(Tansu), real (a 3-broker Apache Kafka, replication factor 3; `make kafka-deps`; "
        f"broker '{REAL_BAYOU}') or both, side by side; the other scenarios always run on "
        "the embedded broker",
    )
    ap.add_argument(
        "--kafka-brokers",
        type=int,
        default=3,
        help="--kafka real|both: Apache Kafka brokers (replication factor min(3, N); "
        "3 = production's shape, 1 = Kafka itself without replication)",
    )
    ap.add_argument(
        "--scenario",
        action="append",
        choices=[s.name for s in SCENARIOS],
        help="run only these scenarios (repeatable); default: all but "
        + ", ".join(OPT_IN_SCENARIOS),
    )
    ap.add_argument(
        "--bayou-max-inflight",
        type=int,
        default=1000,
        help="BAYOU_MAX_INFLIGHT_MESSAGES for the Bayou nodes (0 = Bayou's default, 100); "
        "above --window, like mosquitto's max_inflight_messages 0, so no client falls back to "
        "catch-up from Kafka",
    )
    ap.add_argument(
        "--mosquitto-nodelay",
        action="store_true",
        help="set_tcp_nodelay true for mosquitto (default: stock, Nagle on)",
    )
    ap.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    args = ap.parse_args(argv)
    if not 1 <= args.window < 65535:
        ap.error("--window must be between 1 and 65534 (QoS 1 packet ids)")
    if args.payload < 16:
        ap.error("--payload must be at least 16 bytes (timestamp + sequence)")
    if args.messages < args.publishers:
        ap.error("--messages must be at least --publishers")
    if not 1 <= args.fanout_procs <= args.subscribers:
        ap.error("--fanout-procs must be between 1 and --subscribers")
    if not 1 <= args.idle_procs <= args.idle_connections:
        ap.error("--idle-procs must be between 1 and --idle-connections")
    if args.fanout_window < 1 or args.fanout_messages < 1:
        ap.error("--fanout-window and --fanout-messages must be at least 1")
    if not 1 <= args.sessions_procs <= min(args.sessions, args.reconnect_sessions):
        ap.error("--sessions-procs must be between 1 and --sessions / --reconnect-sessions")
    if not 0 <= args.sessions_sample <= args.sessions:
        ap.error("--sessions-sample must be between 0 and --sessions")
    if args.auth_connects < 1:
        ap.error("--auth-connects must be at least 1")
    if args.reconnect_messages < 1:
        ap.error("--reconnect-messages must be at least 1")
    if args.kafka_brokers < 1:
        ap.error("--kafka-brokers must be at least 1")
    if args.ingress_processes < 0:
        ap.error("--ingress-processes must not be negative")
    if args.agent_records < 1 or args.agent_repeat < 1:
        ap.error("--agent-records and --agent-repeat must be at least 1")
    if not 1 <= args.agent_devices <= args.agent_records:
        ap.error("--agent-devices must be between 1 and --agent-records")
    if args.e2e_rate <= 0 or args.e2e_seconds <= 0 or args.e2e_warmup < 0 or args.e2e_drain < 0:
        ap.error("--e2e-rate and --e2e-seconds must be positive, --e2e-warmup/--e2e-drain >= 0")
    if args.e2e_devices < 1 or args.e2e_repeat < 1:
        ap.error("--e2e-devices and --e2e-repeat must be at least 1")
    if not args.scenario or "agent_window_mean" in args.scenario:
        if not 1 <= args.window_devices <= args.agent_records:
            ap.error("--window-devices must be between 1 and --agent-records")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios, write the JSON results, print the tables; 1 on any error."""
    args = parse_args(argv)
    scenarios = [
        s
        for s in SCENARIOS
        if (s.name in args.scenario if args.scenario else s.name not in OPT_IN_SCENARIOS)
    ]
    # The agent scenarios need no MQTT broker: they run after the others, on their own Kafka.
    agent_scenarios = [s for s in scenarios if s.kind == "agent" and args.only != "mosquitto"]
    e2e_scenarios = [s for s in scenarios if s.kind == "e2e" and args.only != "mosquitto"]
    broker_scenarios = [s for s in scenarios if s.kind not in ("agent", "e2e")]
    wanted = [n for sc in broker_scenarios for n in broker_names(sc, args)]
    errors: dict[str, str] = {}
    brokers: dict[str, Broker] = {}
    report: dict[str, Any] = {
        "machine": machine_info(),
        "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "brokers": {},
        "scenarios": [],
    }

    def start(name: str) -> Broker | None:
        if name in errors:
            return None
        broker: Broker
        if name == "mosquitto":
            broker = Mosquitto(workdir, args.mosquitto_nodelay)
        elif name == "bayou":
            broker = Bayou(workdir, 1, args.bayou_max_inflight)
        elif name == REAL_BAYOU:
            broker = Bayou(workdir, 1, args.bayou_max_inflight, "real", args.kafka_brokers)
        else:
            broker = Bayou(workdir, args.ingress_processes, args.bayou_max_inflight)
        console.print(f"starting {name} ...")
        try:
            broker.start()
        except (BrokerError, OSError, TimeoutError) as exc:
            errors[name] = str(exc)
            console.print(f"[bold red]{name} unavailable:[/] {exc}")
            return None
        brokers[name] = broker
        console.print(f"{name} listening on 127.0.0.1:{broker.port}")
        return broker

    def stop(name: str) -> None:
        broker = brokers.pop(name, None)
        if broker is not None:
            report["brokers"][name] = broker.describe()
            broker.stop()

    with tempfile.TemporaryDirectory(prefix="bayou-bench-") as tmp:
        workdir = Path(tmp)
        t_begin = time.monotonic()
        try:
            # The multi-process and real-Kafka variants start before their first scenario and
            # stop after their last, so their idle Kafka and nodes do not share the cores with
            # other scenarios.
            for name in dict.fromkeys(wanted):
                if name in ("mosquitto", "bayou"):
                    start(name)
            raw: dict[tuple[str, str], list[dict[str, Any]]] = {}
            # idle_memory first: it measures what the first connections cost a fresh broker,
            # before other scenarios leave freed memory behind for it to reuse.
            order = sorted(broker_scenarios, key=lambda s: s.kind != "idle")
            for pos, sc in enumerate(order):
                names = broker_names(sc, args)
                for name in names:
                    if name not in brokers:
                        start(name)
                repeats = {
                    "idle": args.idle_repeat,
                    "offline": args.sessions_repeat,
                    "reconnect": args.sessions_repeat,
                }.get(sc.kind, args.repeat)
                for rep in range(repeats):
                    # Interleave, alternating which broker goes first.
                    live = [brokers[n] for n in names if n in brokers]
                    for broker in live if rep % 2 == 0 else list(reversed(live)):
                        run_id = f"{sc.name}-{broker.name}-{rep}-{os.getpid()}"
                        try:
                            if sc.kind == "pubsub":
                                r = run_pubsub(broker, sc, args, run_id)
                            else:
                                r = RUNS[sc.kind](broker, args, run_id)
                        except (RuntimeError, OSError, BrokerError) as exc:
                            console.print(f"[red]{sc.name} on {broker.name} failed:[/] {exc}")
                            errors[f"{sc.name}/{broker.name}/{rep}"] = str(exc)
                            continue
                        raw.setdefault((sc.name, broker.name), []).append(r)
                        print_run(sc, broker.name, rep, repeats, r)
                later = {n for s in order[pos + 1 :] for n in broker_names(s, args)}
                for name in [n for n in brokers if n not in later and n not in MAIN_BROKERS]:
                    stop(name)
        finally:
            for name in list(brokers):
                stop(name)
        # Each on its own Kafka, one kind after the other (embedded first).
        agent_entries = {
            sc.name: [
                agent_bench.run_agent_scenario(sc.name, sc.title, args, workdir, errors, kind)
                for kind in kafka_kinds(args, sc.name)
            ]
            for sc in agent_scenarios
        }
        e2e_entries = {
            sc.name: [
                latency.run_e2e_scenario(sc.title, args, workdir, errors, kind)
                for kind in kafka_kinds(args, sc.name)
            ]
            for sc in e2e_scenarios
        }
        report["duration_s"] = round(time.monotonic() - t_begin, 1)
    for sc in scenarios:
        if sc.kind == "agent":
            report["scenarios"].extend(agent_entries.get(sc.name, []))
        elif sc.kind == "e2e":
            report["scenarios"].extend(e2e_entries.get(sc.name, []))
        else:
            report["scenarios"].append(scenario_entry(sc, raw, args))
    report.update(ingest_targets(report["scenarios"]))
    report["errors"] = errors
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    for key in [k for k in report if k.startswith("ingest_target")]:
        t = report[key]
        console.print(f"{key} (section 9): ratio {t['ratio']:.3f}, target >= {t['target']}")
    console.print(f"results written to {args.output}")
    if errors:
        console.print(f"[bold red]{len(errors)} error(s)[/]: " + "; ".join(sorted(errors)))
        return 1
    return 0
