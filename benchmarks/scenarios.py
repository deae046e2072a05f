"""The catalogue of benchmark scenarios: their names, titles, kinds and run order, and which
brokers each runs against."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from benchmarks.kafka_backends import REAL_BAYOU, kafka_kinds


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    qos: int
    with_subscriber: bool
    # "pubsub", "fanout", "idle", "reconnect", "auth", "offline", "agent", "e2e"
    kind: str = "pubsub"
    # MQTT protocol level of the generator's connections ("pubsub" only): 4 = 3.1.1, 5 = MQTT 5.
    protocol: int = 4
    # Each subscriber is the one member of a shared subscription ($share/g<i>/<its topic>).
    shared: bool = False


SCENARIOS = [
    Scenario("qos0_pub_sub", "QoS 0 publisher -> subscriber", 0, True),
    Scenario("qos1_pub_sub", "QoS 1 publisher -> subscriber", 1, True),
    Scenario("qos1_puback", "QoS 1 publish -> PUBACK, no subscriber", 1, False),
    Scenario("fanout_1000", "one publisher -> 1,000 subscribers", 1, True, "fanout"),
    Scenario("qos2_pub_sub", "QoS 2 publisher -> subscriber", 2, True),
    Scenario("qos2_puback", "QoS 2 publish -> PUBCOMP, no subscriber", 2, False),
    # The QoS 1 pair again with every generator connection on MQTT 5; after the scenarios of the
    # bayou-<N>p and bayou-kafka variants, so those are stopped by then.
    Scenario("qos1_pub_sub_v5", "QoS 1 publisher -> subscriber, MQTT 5", 1, True, protocol=5),
    Scenario(
        "qos1_puback_v5", "QoS 1 publish -> PUBACK, no subscriber, MQTT 5", 1, False, protocol=5
    ),
    Scenario(
        "qos1_shared_v5",
        "QoS 1 publisher -> shared subscription, MQTT 5",
        1,
        True,
        protocol=5,
        shared=True,
    ),
    Scenario("reconnect_1000", "1,000 persistent sessions reconnect at once", 1, True, "reconnect"),
    Scenario("idle_memory", "broker RSS per idle connection", 0, False, "idle"),
    # Opt-in; restarts each broker with authentication on, then back to anonymous access.
    Scenario("connect_auth", "CONNECT with username + password vs anonymous", 0, False, "auth"),
    # Last: on Bayou it restarts the ingress node.
    Scenario("offline_sessions", "broker RSS per offline persistent session", 1, False, "offline"),
    # Agent workers on their own embedded Kafka (benchmarks.agent_bench), after the brokers.
    Scenario("agent_count", "counting agent (table + changelog) vs hand loop", 0, False, "agent"),
    Scenario("agent_window_mean", "10 s tumbling mean, 10,000 devices", 0, False, "agent"),
    # Its own embedded Kafka, ingress and worker (benchmarks.latency), after the agents.
    Scenario("e2e_latency", "publish -> agent -> command at the device", 1, True, "e2e"),
]
# Scenarios also run against Bayou with --ingress-processes node processes ("bayou-<N>p").
MULTI_PROCESS_SCENARIOS = ("qos1_puback", "fanout_1000")
AGENT_SCENARIOS = ("agent_count", "agent_window_mean")
# Run only when named with --scenario.
OPT_IN_SCENARIOS: tuple[str, ...] = ("connect_auth",)


def broker_names(sc: Scenario, args: argparse.Namespace) -> list[str]:
    """The brokers a scenario runs against, in order."""
    names = [args.only] if args.only else ["mosquitto", "bayou"]
    if args.ingress_processes > 1 and sc.name in MULTI_PROCESS_SCENARIOS and "bayou" in names:
        names.append(f"bayou-{args.ingress_processes}p")
    kinds = kafka_kinds(args, sc.name)
    if "bayou" in names and "real" in kinds:
        names.append(REAL_BAYOU)
        if "embedded" not in kinds:
            names.remove("bayou")
    return names
