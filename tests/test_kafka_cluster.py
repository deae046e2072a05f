"""Bayou on a real 3-broker Apache Kafka cluster (the ``kafka3`` fixture, tests/apache_kafka.py).

- ``test_topics_are_replicated_and_state_survives_compaction_and_a_node_restart``: the topics
  `bayou ingress` creates with ``BAYOU_REPLICATION_FACTOR=3`` have 3 replicas per partition,
  ``min.insync.replicas=2`` (set on the topic, not inherited), and the state topics
  ``cleanup.policy=compact``. Retained messages and a persistent session written many times
  are compacted by Kafka's log cleaner (fewer records when read from the start), and a new
  ingress node still has every retained message and the session with its queued QoS 1 messages.
- ``test_a_killed_broker_loses_no_acknowledged_message``: kill -9 of the broker leading the
  most telemetry partitions while 4 clients publish QoS 1 through 2 ingress nodes and a worker
  runs the demo app: every PUBACKed message reaches the subscriber, no publisher is
  disconnected, and the worker goes on publishing window stats and commands.
- ``test_ingress_with_kafka_down_exits_with_one_line``: an unreachable broker list ends
  `bayou ingress` with one line naming BAYOU_KAFKA_BOOTSTRAP, within its 15 s admin timeout.
- ``test_paused_cluster_holds_pubacks_and_loses_nothing``: every broker SIGSTOPped: no PUBACK
  while paused; after SIGCONT every message is acknowledged and delivered once.

The cluster is shared by the session; every test uses names of its own run (``RUN``), and the
``cluster`` fixture leaves all three brokers running and resumed whatever happened.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
)

from bayou.metrics_scrape import metric_value
from bayou.net import free_port
from bayou.processes import stop_process
from bayou.settings import Settings
from tests.apache_kafka import ApacheKafka
from tests.conftest import BAYOU, Proc, bayou_env, start_ingress, start_worker
from tests.helpers import Mqtt, Received, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

RF = {"BAYOU_REPLICATION_FACTOR": "3"}
FAILURES = "bayou_ingress_produce_failures_total"


@pytest.fixture
def cluster(kafka3: ApacheKafka) -> Iterator[ApacheKafka]:
    """The session's 3-broker cluster; afterwards every broker runs again and is resumed."""
    yield kafka3
    kafka3.resume()
    for i in range(len(kafka3.nodes)):
        if i not in kafka3.running():
            kafka3.nodes[i].proc = None
            kafka3.restart(i)


def run_id() -> str:
    return uuid.uuid4().hex[:8]


def ingress(k: ApacheKafka, log: Path, procs: list[Proc], **env: str) -> Proc:
    p = start_ingress(k.bootstrap(), log, **RF, **env)
    procs.append(p)
    return p


def admin(k: ApacheKafka) -> AdminClient:
    return AdminClient({"bootstrap.servers": k.bootstrap(), "log_level": 2})


def topic_configs(a: AdminClient, topic: str) -> dict[str, ConfigEntry]:
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return dict(a.describe_configs([res])[res].result(30))


def count_keys(k: ApacheKafka, topic: str, keys: set[bytes]) -> Counter[bytes]:
    """How many records of each of ``keys`` ``topic`` holds, read from its start to its end."""
    c = Consumer({"bootstrap.servers": k.bootstrap(), "group.id": f"count-{run_id()}",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "log_level": 2})  # fmt: skip
    try:
        meta = c.list_topics(topic, timeout=20).topics[topic]
        ends: dict[int, int] = {}
        for p in meta.partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=20)
            if high > low:
                ends[p] = high
        c.assign([TopicPartition(topic, p, 0) for p in ends])  # 0: the log start, whatever
        counts: Counter[bytes] = Counter()
        done: set[int] = set()
        deadline = time.monotonic() + 60
        while done != set(ends):
            assert time.monotonic() < deadline, f"reading {topic} did not reach its end"
            msg = c.poll(0.5)
            if msg is None:
                continue
            part, err = msg.partition() or 0, msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    done.add(part)
                continue
            key = msg.key()
            if key in keys:
                counts[key or b""] += 1
            if (msg.offset() or 0) + 1 >= ends[part]:
                done.add(part)
        return counts
    finally:
        c.close()


def test_topics_are_replicated_and_state_survives_compaction_and_a_node_restart(
    cluster: ApacheKafka, tmp_path: Path, procs: list[Proc]
) -> None:
    s = Settings()
    node = ingress(cluster, tmp_path / "a.log", procs)
    a = admin(cluster)
    meta = a.list_topics(timeout=20)
    for topic in s.all_topics():
        parts = meta.topics[topic].partitions
        # The cluster is shared: the compose topology test may have created the topics first,
        # with the compose file's partition count. Replication is the point here.
        assert parts, topic
        assert all(len(p.replicas) == 3 for p in parts.values()), (topic, parts)
        conf = topic_configs(a, topic)
        assert conf["min.insync.replicas"].value == "2", topic
        # Set on the topic by Bayou, not the broker default of this test cluster.
        source = ConfigSource(conf["min.insync.replicas"].source)
        assert source == ConfigSource.DYNAMIC_TOPIC_CONFIG, (topic, source)
        policy = conf["cleanup.policy"].value
        assert policy == ("compact" if topic in s.compacted_topics() else "delete"), topic

    r = run_id()
    retained = [f"k3/{r}/ret/{i}" for i in range(5)]
    session_id = f"k3-{r}-sess"
    queue_topic = f"k3/{r}/queue/x"
    pub = Mqtt(node.mqtt_port, f"k3-{r}-pub").connect()
    sess = Mqtt(node.mqtt_port, session_id, clean_session=False).connect()
    ret_keys = {t.encode() for t in retained}
    sess_key = session_id.encode()
    closed = False
    try:
        for j in range(20):
            for t in retained:
                pub.client.publish(t, f"v{j}", qos=1, retain=True).wait_for_publish(20)
        sess.subscribe(f"k3/{r}/queue/#", 1)
        for j in range(15):  # SUBSCRIBE/UNSUBSCRIBE rewrite the session record
            sess.subscribe(f"k3/{r}/extra/{j}", 1)
            sess.unsubscribe(f"k3/{r}/extra/{j}")
        written_ret = sum(count_keys(cluster, s.retained_topic, ret_keys).values())
        # The session is checkpointed at most once a second: how many records those rounds
        # made depends on the machine's speed. Rewrite it until there are enough to compact.
        extra = [0]

        def session_records() -> int:
            extra[0] += 1
            sess.subscribe(f"k3/{r}/extra/w{extra[0]}", 1)
            sess.unsubscribe(f"k3/{r}/extra/w{extra[0]}")
            time.sleep(0.5)
            return int(count_keys(cluster, s.sessions_topic, {sess_key})[sess_key])

        wait_until(lambda: session_records() >= 5, 60, "5 records of the session")
        written_sess = count_keys(cluster, s.sessions_topic, {sess_key})[sess_key]
        assert written_ret >= 100 and written_sess >= 5, (written_ret, written_sess)

        # Make the log cleaner work within seconds on the two state topics (from here on).
        state = [s.retained_topic, s.sessions_topic]
        fast = {"segment.ms": "300", "min.cleanable.dirty.ratio": "0.01",
                "min.compaction.lag.ms": "0", "delete.retention.ms": "1000"}  # fmt: skip
        ops = [
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in fast.items()
        ]
        resources = [
            ConfigResource(ConfigResource.Type.TOPIC, t, incremental_configs=ops) for t in state
        ]
        for f in a.incremental_alter_configs(resources).values():
            f.result(30)

        # The active segment is never cleaned, and a segment rolls only at an append: keep
        # writing the same keys (retained: the last value again; the session: one more
        # SUBSCRIBE/UNSUBSCRIBE) so their partitions roll every 300 ms. Compacted, each key
        # is down to about one record plus the few in the active segment.
        seen: list[int] = []
        ticks = [0]

        def compacted() -> bool:
            ticks[0] += 1
            for t in retained:
                pub.client.publish(t, "v19", qos=1, retain=True).wait_for_publish(20)
            sess.subscribe(f"k3/{r}/extra/t{ticks[0]}", 1)
            sess.unsubscribe(f"k3/{r}/extra/t{ticks[0]}")
            n_ret = sum(count_keys(cluster, s.retained_topic, ret_keys).values())
            n_sess = count_keys(cluster, s.sessions_topic, {sess_key})[sess_key]
            seen[:] = [n_ret, n_sess]
            return n_ret < written_ret and n_sess < written_sess

        try:
            wait_until(compacted, 90, "Kafka's log cleaner")
        except TimeoutError:
            raise AssertionError(
                f"not compacted in 90 s: {written_ret} -> {seen[0]} retained records, "
                f"{written_sess} -> {seen[1]} session records"
            ) from None
        print(f"compacted after {ticks[0]} ticks: retained {written_ret} -> {seen[0]} records, "
              f"session {written_sess} -> {seen[1]}")  # fmt: skip

        sess.close()  # offline: these are queued for it
        closed = True
        for j in range(5):
            pub.publish(queue_topic, f"q{j}", qos=1).wait_for_publish(20)
    finally:
        pub.close()
        if not closed:
            sess.close()

    # A new node reads the compacted topics from the start.
    stop_process(node.proc)
    node2 = ingress(cluster, tmp_path / "b.log", procs)
    sub = Mqtt(node2.mqtt_port, f"k3-{r}-sub").connect()
    back = Mqtt(node2.mqtt_port, session_id, clean_session=False).connect()
    try:
        sub.subscribe(f"k3/{r}/ret/#", 1)
        got = {m.topic: m for m in (sub.expect(lambda m: m.retain, 30) for _ in retained)}
        assert {t: m.payload for t, m in got.items()} == {t: b"v19" for t in retained}
        assert back.connack_flags == 1, "the persistent session was not found after compaction"
        queued = [back.expect(lambda m: m.topic == queue_topic, 30).payload for _ in range(5)]
        assert sorted(queued) == [f"q{j}".encode() for j in range(5)]
    finally:
        sub.close()
        back.close()


class Publisher:
    """A device publishing demo readings at QoS 1 in its own thread; records PUBACK waits."""

    def __init__(self, port: int, device: str) -> None:
        self.device = device
        self.topic = f"sensors/{device}/telemetry"
        self.mqtt = Mqtt(port, f"pub-{device}")
        self.mqtt.client.max_inflight_messages_set(50)
        self.sent: dict[int, float] = {}  # mid -> when published
        self.acked: dict[int, float] = {}  # mid -> when PUBACKed
        self.seq_of: dict[int, int] = {}
        self.disconnects = 0
        self.errors: list[int] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.mqtt.client.on_publish = self._on_publish
        self.mqtt.client.on_disconnect = self._on_disconnect
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self._lock:
            self.acked[mid] = time.monotonic()

    def _on_disconnect(self, *args: Any) -> None:
        self.disconnects += 1

    def start(self) -> Publisher:
        self.mqtt.connect()
        self.thread.start()
        return self

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            temp = 35.0 if n % 10 == 9 else 20.0 + (n % 5)
            body = json.dumps({"temperature": temp, "humidity": float(n), "ts": time.time()})
            info = self.mqtt.publish(self.topic, body, qos=1)
            if info.rc != 0:
                self.errors.append(info.rc)
            with self._lock:
                self.sent[info.mid] = time.monotonic()
                self.seq_of[info.mid] = n
            n += 1
            time.sleep(0.05)

    def acked_seqs(self) -> set[int]:
        with self._lock:
            return {self.seq_of[m] for m in self.acked if m in self.seq_of}

    def waits(self) -> list[float]:
        with self._lock:
            return [self.acked[m] - t for m, t in self.sent.items() if m in self.acked]

    def all_acked(self) -> bool:
        with self._lock:
            return set(self.sent) <= set(self.acked)


def leader_counts(a: AdminClient, topic: str) -> Counter[int]:
    parts = a.list_topics(topic, timeout=20).topics[topic].partitions
    return Counter(p.leader for p in parts.values())


def test_a_killed_broker_loses_no_acknowledged_message(
    cluster: ApacheKafka, tmp_path: Path, procs: list[Proc]
) -> None:
    s = Settings()
    fast = {"BAYOU_DEMO_WINDOW_SECONDS": "2", "BAYOU_DEMO_ALERT_COOLDOWN_SECONDS": "0"}
    nodes = [ingress(cluster, tmp_path / f"in{i}.log", procs, **fast) for i in range(2)]
    w = start_worker(
        cluster.bootstrap(), tmp_path / "w.log", tmp_path / "state", None, **RF, **fast
    )
    procs.append(w)
    r = run_id()
    devices = [f"k3{r}-d{i}" for i in range(4)]
    received: list[Received] = []
    sub = Mqtt(nodes[1].mqtt_port, f"k3-{r}-sub")
    sub.connect()
    for d in devices:
        sub.subscribe(f"sensors/{d}/#", 1)
        sub.subscribe(f"devices/{d}/commands", 1)
    pubs = [Publisher(nodes[i % 2].mqtt_port, d).start() for i, d in enumerate(devices)]
    a = admin(cluster)
    killed: int | None = None
    try:
        time.sleep(6)  # load before the failure
        leaders = leader_counts(a, s.default_topic)
        victim = leaders.most_common(1)[0][0]  # node id; index = id - 1
        t_kill = time.time()
        cluster.kill(victim - 1)
        killed = victim - 1
        time.sleep(20)  # load during and after the failure
        for p in pubs:
            p.stop.set()
            p.thread.join(10)
        wait_until(lambda: all(p.all_acked() for p in pubs), 60, "every publish to be PUBACKed")
        after = leader_counts(a, s.default_topic)
        assert victim not in after, f"broker {victim} still leads {after}"

        # Every acknowledged reading reaches the subscriber (at least once: QoS 1).
        want = {(p.topic, n) for p in pubs for n in p.acked_seqs()}

        def drained() -> bool:
            while not sub.messages.empty():
                received.append(sub.messages.get())
            got = {(m.topic, int(json.loads(m.payload)["humidity"])) for m in received
                   if m.topic.endswith("/telemetry")}  # fmt: skip
            return want <= got

        wait_until(drained, 60, "every acknowledged reading at the subscriber")
        readings = Counter((m.topic, json.loads(m.payload)["humidity"]) for m in received
                           if m.topic.endswith("/telemetry"))  # fmt: skip
        assert {(t, int(h)) for t, h in readings} == want, "a reading nobody published arrived"
        dups = sum(c - 1 for c in readings.values())
        waits = [x for p in pubs for x in p.waits()]
        print(f"killed broker {victim} (led {leaders[victim]} of {s.topic_partitions} "
              f"partitions); {len(want)} readings acknowledged, {dups} delivered twice; "
              f"PUBACK wait max {max(waits):.2f}s, "
              f"median {sorted(waits)[len(waits) // 2]:.3f}s")  # fmt: skip

        # No publisher saw anything but latency.
        assert [p.disconnects for p in pubs] == [0] * len(pubs)
        assert [p.errors for p in pubs] == [[]] * len(pubs)

        # The worker goes on: window stats of windows that began after the kill, commands.
        def results_after_kill() -> bool:
            drained()
            stats = [json.loads(m.payload) for m in received if m.topic.endswith("/stats")]
            cmds = [json.loads(m.payload) for m in received if m.topic.endswith("/commands")]
            return any(st["window_start"] > t_kill for st in stats) and any(
                c["issued_at"] > t_kill + 1 for c in cmds
            )

        wait_until(results_after_kill, 60, "window stats and commands after the broker's kill")
        assert w.proc.poll() is None, w.log_text()[-3000:]
        assert all(n.proc.poll() is None for n in nodes)
        assert metric_value(nodes[0].metrics_port, FAILURES) == 0.0
        assert metric_value(nodes[1].metrics_port, FAILURES) == 0.0
    finally:
        for p in pubs:
            p.stop.set()
            p.mqtt.close()
        sub.close()
        if killed is not None:
            t0 = time.monotonic()
            cluster.restart(killed)
            print(f"broker {killed + 1} restarted in {time.monotonic() - t0:.1f}s")
    assert len(a.list_topics(timeout=20).brokers) == 3


def test_ingress_with_kafka_down_exits_with_one_line(tmp_path: Path) -> None:
    down = ",".join(f"127.0.0.1:{free_port()}" for _ in range(3))  # nothing listens there
    env = bayou_env(BAYOU_KAFKA_BOOTSTRAP=down, BAYOU_MQTT_PORT=str(free_port()),
                    BAYOU_INGRESS_METRICS_PORT=str(free_port()), **RF)  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.Popen([*BAYOU, "ingress"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        _, err = proc.communicate(timeout=60)  # the admin client's timeout is 15 s
    except subprocess.TimeoutExpired:
        stop_process(proc)
        raise AssertionError("bayou ingress hung with Kafka down") from None
    took = time.monotonic() - t0
    lines = err.decode().strip().splitlines()
    print(f"exit {proc.returncode} after {took:.1f}s: {lines}")
    assert proc.returncode != 0
    assert len(lines) == 1, lines
    assert "BAYOU_KAFKA_BOOTSTRAP" in lines[0] and down in lines[0], lines[0]


def test_paused_cluster_holds_pubacks_and_loses_nothing(
    cluster: ApacheKafka, tmp_path: Path, procs: list[Proc]
) -> None:
    node = ingress(cluster, tmp_path / "in.log", procs)
    r = run_id()
    topic = f"k3/{r}/paused"
    sub = Mqtt(node.mqtt_port, f"k3-{r}-sub").connect()
    pub = Mqtt(node.mqtt_port, f"k3-{r}-pub").connect()
    failures_before = metric_value(node.metrics_port, FAILURES) or 0.0
    try:
        sub.subscribe(topic, 1)
        pub.publish(topic, b"before", qos=1).wait_for_publish(20)
        cluster.pause()
        t_pause = time.monotonic()
        infos = [pub.publish(topic, f"p{i}", qos=1) for i in range(10)]
        time.sleep(4)  # an absence check: a PUBACK now would not be backed by Kafka
        assert not any(i.is_published() for i in infos), "PUBACK while every broker was stopped"
        cluster.resume()
        for i in infos:
            i.wait_for_publish(60)
        held = time.monotonic() - t_pause
        assert all(i.is_published() for i in infos)
        assert pub.client.is_connected()
        got = [sub.expect(lambda m: m.topic == topic, 30).payload for _ in range(11)]
        assert sorted(got) == sorted([b"before", *(f"p{i}".encode() for i in range(10))])
        failures = (metric_value(node.metrics_port, FAILURES) or 0.0) - failures_before
        print(f"PUBACKs held {held:.1f}s by the pause; produce failures: {failures}")
        # The producer's message timeout is 30 s: a 4 s pause times nothing out.
        assert failures == 0.0
    finally:
        cluster.resume()
        sub.close()
        pub.close()
