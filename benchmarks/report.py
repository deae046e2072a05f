"""What the harness prints: a line per run as it ends, and the report's tables (brokers,
idle connections, offline sessions, reconnects, agents; ``e2e_latency`` has its own in
:mod:`benchmarks.e2e_console`)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from benchmarks import latency
from benchmarks.auth_console import auth_run_line, print_auth_table
from benchmarks.console import console, fmt
from benchmarks.kafka_backends import REAL_BAYOU
from benchmarks.scenarios import AGENT_SCENARIOS, Scenario


def print_table(report: dict[str, Any]) -> None:
    agent = [sc for sc in report["scenarios"] if sc["name"] in AGENT_SCENARIOS]
    e2e = [sc for sc in report["scenarios"] if sc["name"] == "e2e_latency"]
    if len(agent) + len(e2e) == len(report["scenarios"]):
        if agent:
            print_agent_table(agent)
        for sc in e2e:
            latency.print_e2e_table(sc)
        return
    table = Table(title="Bayou vs mosquitto (medians; 100-byte payloads)")
    for col, justify in [
        ("scenario", "left"),
        ("broker", "left"),
        ("msg/s", "right"),
        ("msg per broker CPU-s", "right"),
        ("broker CPU s", "right"),
        ("kafka CPU s", "right"),
        ("p50 ms", "right"),
        ("p99 ms", "right"),
        ("done/sent", "right"),
        ("ratio", "right"),
    ]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    idle = [sc for sc in report["scenarios"] if sc["name"] == "idle_memory"]
    offline = [sc for sc in report["scenarios"] if sc["name"] == "offline_sessions"]
    reconnect = [sc for sc in report["scenarios"] if sc["name"] == "reconnect_1000"]
    auth = [sc for sc in report["scenarios"] if sc["name"] == "connect_auth"]
    for sc in report["scenarios"]:
        skip = ("idle_memory", "offline_sessions", "reconnect_1000", "connect_auth", "e2e_latency")
        if sc["name"] in (*skip, *AGENT_SCENARIOS):
            continue
        first = True
        for name in [k for k in sc if k == "mosquitto" or k.startswith("bayou")]:
            r = sc.get(name)
            if r is None:
                continue
            shown = sc.get("ratio") if name == "bayou" else sc.get(f"ratio_{name}")
            table.add_row(
                sc["name"] if first else "",
                name,
                fmt(r.get("msgs_per_s")),
                fmt(r.get("msgs_per_broker_cpu_s")),
                fmt(r.get("broker_cpu_s"), 2),
                fmt(r.get("kafka_cpu_s"), 2),
                fmt(r.get("p50_ms"), 2),
                fmt(r.get("p99_ms"), 2),
                f"{r['completed']:,}/{r['sent']:,}",
                fmt(shown, 3),
            )
            first = False
    if table.row_count:  # not when only scenarios with tables of their own ran
        console.print(table)
        console.print(
            "ratio = Bayou msg per ingress CPU-second / mosquitto msg per broker CPU-second "
            "(target for qos1_puback vs mosquitto qos1_pub_sub: >= 0.5, DESIGN.md section 9); "
            "fanout_1000: msg = deliveries (target ratio >= 0.5); bayou-<N>p: N node processes, "
            "CPU summed over them and their parent (per-process figure), msg/s = whole machine; "
            f"{REAL_BAYOU}: on 3 Apache Kafka brokers (replication factor 3, acks=all), kafka CPU "
            "summed over the three"
        )
    if idle:
        print_idle_table(idle[0])
    if offline:
        print_offline_table(offline[0])
    if reconnect:
        print_reconnect_table(reconnect[0])
    if auth:
        print_auth_table(auth[0])
    if agent:
        print_agent_table(agent)
    for sc in e2e:
        latency.print_e2e_table(sc)


def print_agent_table(entries: list[dict[str, Any]]) -> None:
    table = Table(title="Agent workers vs a hand-written aiokafka loop (medians)")
    cols = [
        "scenario",
        "side",
        "records/s",
        "records per CPU-s",
        "seconds",
        "CPU s",
        "join s",
        "windows",
        "ratio",
    ]
    for col in cols:
        table.add_column(col, justify="left" if col in ("scenario", "side") else "right")
    for sc in entries:
        first = True
        for side in ("hand_loop", "worker", "faust"):
            r = sc.get(side)
            if r is None:
                continue
            side_ratio = {"worker": sc.get("ratio"), "faust": sc.get("faust_ratio")}.get(side)
            where = "" if sc.get("kafka", "embedded") == "embedded" else " (real Kafka)"
            table.add_row(
                sc["name"] + where if first else "",
                {"worker": "bayou worker", "faust": "stock faust (once)"}.get(side, "hand loop"),
                fmt(r.get("records_per_s")),
                fmt(r.get("records_per_cpu_s")),
                fmt(r.get("seconds"), 2),
                fmt(r.get("cpu_s"), 2),
                fmt(r.get("join_s"), 2),
                fmt(r.get("windows_emitted")) if sc["name"] == "agent_window_mean" else "",
                fmt(side_ratio, 3),
            )
            first = False
    console.print(table)
    console.print(
        "ratio = records/s / hand loop records/s, same data, same run; target for the bayou "
        "worker in agent_count >= 0.8 (DESIGN.md section 9); group join excluded from all; "
        "real Kafka = 3 Apache Kafka brokers, replication factor 3"
    )


def print_offline_table(sc: dict[str, Any]) -> None:
    table = Table(title="Offline persistent sessions: broker RSS (KiB; Bayou = ingress process)")
    cols = [
        "broker",
        "sessions",
        "RSS before",
        "RSS offline",
        "KiB/session",
        "RSS +1 msg each",
        "KiB/queued msg",
        "RSS +2 msgs each",
        "KiB/queued msg (2nd)",
        "restarted node",
        "KiB/session (restart)",
        "sample got msg",
        "ratio",
    ]
    for col in cols:
        table.add_column(col, justify="left" if col == "broker" else "right")
    for name in ("mosquitto", "bayou"):
        r = sc.get(name)
        if r is None:
            continue
        sample = r.get("sample") or {}
        table.add_row(
            name,
            fmt(r.get("sessions")),
            fmt(r.get("rss_before_kib")),
            fmt(r.get("rss_offline_kib")),
            fmt(r.get("kib_per_offline_session"), 2),
            fmt(r.get("rss_queued_kib")),
            fmt(r.get("kib_per_queued_message"), 2),
            fmt(r.get("rss_queued_2nd_kib")),
            fmt(r.get("kib_per_queued_message_2nd"), 2),
            fmt(r.get("rss_restarted_kib")),
            fmt(r.get("kib_per_session_after_restart"), 2),
            f"{sample.get('complete', 0):,}/{sample.get('sessions', 0):,}" if sample else "-",
            fmt(sc.get("ratio"), 2) if name == "bayou" else "",
        )
    console.print(table)
    console.print(
        "ratio = Bayou KiB per offline session / mosquitto's (lower is better); target "
        "(DESIGN.md section 9, no broker memory beyond Kafka state): Bayou KiB per queued "
        "message <= 0.1 (messages stay in Kafka); mosquitto queues them in memory (reference)"
    )


def print_reconnect_table(sc: dict[str, Any]) -> None:
    table = Table(title="Persistent sessions reconnecting at once, messages waiting")
    cols = [
        "broker",
        "sessions",
        "msgs each",
        "seconds",
        "sessions/s",
        "msg/s",
        "all CONNACKed s",
        "p50 s",
        "p99 s",
        "broker CPU s",
        "kafka CPU s",
        "complete",
        "missing",
        "dup",
        "ratio",
    ]
    for col in cols:
        table.add_column(col, justify="left" if col == "broker" else "right")
    for name in ("mosquitto", "bayou"):
        r = sc.get(name)
        if r is None:
            continue
        table.add_row(
            name,
            fmt(r.get("sessions")),
            fmt(r.get("messages_per_session")),
            fmt(r.get("seconds"), 2),
            fmt(r.get("sessions_per_s")),
            fmt(r.get("msgs_per_s")),
            fmt(r.get("all_connacked_s"), 2),
            fmt(r.get("session_p50_s"), 2),
            fmt(r.get("session_p99_s"), 2),
            fmt(r.get("broker_cpu_s"), 2),
            fmt(r.get("kafka_cpu_s"), 2),
            fmt(r.get("complete")),
            fmt(r.get("missing")),
            fmt(r.get("duplicates")),
            fmt(sc.get("ratio"), 2) if name == "bayou" else "",
        )
    console.print(table)
    console.print(
        "ratio = mosquitto seconds / Bayou seconds until every session received and PUBACKed "
        "all its messages (> 1 = Bayou faster); no section 9 target"
    )


def print_idle_table(sc: dict[str, Any]) -> None:
    table = Table(title="Idle connections: broker RSS (KiB; Bayou = ingress process)")
    for col in [
        "broker",
        "clients",
        "RSS before",
        "RSS connected",
        "RSS after disconnect",
        "KiB per client",
        "connects/s",
        "ratio",
    ]:
        table.add_column(col, justify="left" if col == "broker" else "right")
    for name in ("mosquitto", "bayou"):
        r = sc.get(name)
        if r is None:
            continue
        table.add_row(
            name,
            fmt(r.get("connections")),
            fmt(r.get("rss_before_kib")),
            fmt(r.get("rss_connected_kib")),
            fmt(r.get("rss_after_disconnect_kib")),
            fmt(r.get("kib_per_connection"), 2),
            fmt(r.get("connects_per_s")),
            fmt(sc.get("ratio"), 2) if name == "bayou" else "",
        )
    console.print(table)
    console.print(
        "ratio = Bayou KiB per idle client / mosquitto's (lower is better); "
        "target: Bayou under 4 KiB per idle client (DESIGN.md section 9)"
    )


def print_run(sc: Scenario, name: str, rep: int, repeats: int, r: dict[str, Any]) -> None:
    head = f"{sc.name:<16} {name:<9} run {rep + 1}/{repeats}: "
    if sc.kind == "idle":
        console.print(
            head + f"{r['connections']:,} idle clients, RSS "
            f"{r['rss_before_kib']:,} -> {r['rss_connected_kib']:,} -> "
            f"{r['rss_after_disconnect_kib']:,} KiB, "
            f"{fmt(r['kib_per_connection'], 2)} KiB per connection"
        )
    elif sc.kind == "offline":
        console.print(
            head + f"{r['sessions']:,} offline sessions, RSS {r['rss_before_kib']:,} -> "
            f"{r['rss_offline_kib']:,} -> {r['rss_queued_kib']:,} KiB with a message each; "
            f"{r['kib_per_offline_session']:.2f} KiB/session, "
            f"{r['kib_per_queued_message']:.2f} then "
            f"{r['kib_per_queued_message_2nd']:.2f} KiB/queued message"
            + (
                f"; restarted node {fmt(r.get('kib_per_session_after_restart'), 2)} KiB/session"
                if "rss_restarted_kib" in r
                else ""
            )
            + (
                f"; sample {r['sample']['complete']}/{r['sample']['sessions']} got it"
                if "sample" in r
                else ""
            )
        )
    elif sc.kind == "auth":
        console.print(head + auth_run_line(r))
    elif sc.kind == "reconnect":
        console.print(
            head + f"{r['sessions']:,} sessions x {r['messages_per_session']} msgs: "
            f"{fmt(r['seconds'], 2)} s, {fmt(r['sessions_per_s'])} sessions/s, "
            f"complete {r['complete']:,}, missing {r['missing']:,}, "
            f"duplicates {r['duplicates']:,}, session present {r['session_present']:,}"
            + ("  (cut at --reconnect-deadline)" if r["timed_out"] else "")
        )
    else:
        console.print(
            head + f"{r['msgs_per_s']:>10,.0f} msg/s  "
            f"{fmt(r['msgs_per_broker_cpu_s']):>10} msg/broker-CPU-s  "
            f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
            f"{r['completed']:,}/{r['sent']:,}"
            + (f"  per process CPU {r['process_cpu_s']}" if "process_cpu_s" in r else "")
            + ("  STALLED" if r["stalled"] else "")
            + ("  (stopped at --deadline)" if r["timed_out"] else "")
        )
