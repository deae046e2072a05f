"""An ingress node: the MQTT listener, its clients, and the bridge to Kafka."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import gc
import logging
import signal
import time
from collections.abc import Callable

from prometheus_client import Counter, start_http_server

from ingress.config import IngressConfig
from ingress.contract import (
    H_INGRESS_TS,
    H_MQTT_CLIENT_ID,
    H_MQTT_QOS,
    H_MQTT_TOPIC,
    H_RESULT_ID,
    Headers,
)
from ingress.kafka.producer import DoneCallback, IngestProducer
from ingress.kafka.topic_reader import TopicReader
from ingress.metrics import (
    CONNECTIONS,
    CONNECTS_TOTAL,
    END_TO_END_LATENCY,
    MESSAGES_IN_TOTAL,
    MESSAGES_OUT_TOTAL,
    READY,
    SUBSCRIPTIONS,
    TAKEOVERS_TOTAL,
    WILLS_TOTAL,
)
from ingress.outbound.catch_up import CatchUp, start_catch_up
from ingress.outbound.dedup import ResultDedup
from ingress.routing.rules import EgressRouter, Router
from ingress.session_manager import SessionManager
from ingress.state.retained import RetainedStore
from ingress.state.subscriptions import SubscriptionTable
from ingress.wire import codec
from ingress.wire.connection import MQTTConnection, Will
from ingress.wire.listeners import Listener, ListenerError, close_listeners, start_extra_listeners
from kafkaio.reader import Record

log = logging.getLogger(__name__)

# Backpressure: above HIGH unacknowledged records, stop reading from publishers until LOW.
_PENDING_HIGH = 20_000
_PENDING_LOW = 5_000


_QOS = {b"0": 0, b"1": 1, b"2": 2}
# State topics change rarely and nobody waits on them: a long fetch wait spares the node and
# Kafka ~200 empty fetches a second per reader (the embedded broker holds a fetch this long).
_STATE_FETCH_WAIT_MS = 100
_QOS_BYTES = (b"0", b"1", b"2")


def release_free_memory(collect: bool = True) -> None:
    """Give memory freed while materialising Kafka state back to the system.

    Reading ``bayou.sessions`` and ``bayou.retained`` from the start allocates far more than
    the index it leaves; without this the node's RSS keeps that peak for good.
    """
    if collect:
        gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class PortInUseError(Exception):
    """The MQTT port is taken; the message names the port and the setting."""


class IngressNode:
    """Accepts MQTT clients, writes their publishes to Kafka, delivers records back."""

    def __init__(self, config: IngressConfig) -> None:
        self.config = config
        self.router = Router(config.routes, config.default_topic)
        self.subscriptions: SubscriptionTable[MQTTConnection] = SubscriptionTable()
        self.ingest = IngestProducer(config.kafka_bootstrap, config.producer_linger_ms)
        # Records without an mqtt.topic header get one from the egress rules (DESIGN §3).
        self.egress = EgressRouter(config.egress_routes)
        delivery_topics = list(
            dict.fromkeys(
                self.router.kafka_topics() + config.outbound_topics + self.egress.kafka_topics()
            )
        )
        self.delivery = TopicReader(
            config.kafka_bootstrap, delivery_topics, self.deliver, f"delivery-{config.node_id}"
        )
        self.dedup = ResultDedup()
        self.catch_up = CatchUp(self)
        self.retained = RetainedStore()
        self.retained_reader = TopicReader(
            config.kafka_bootstrap,
            [config.retained_topic],
            self.retained.apply,
            f"retained-{config.node_id}",
            from_beginning=True,
            fetch_wait_ms=_STATE_FETCH_WAIT_MS,
        )
        self.sessions = SessionManager(self)
        self.sessions_reader = TopicReader(
            config.kafka_bootstrap,
            [config.sessions_topic],
            self.sessions.store.apply,
            f"sessions-{config.node_id}",
            from_beginning=True,
            fetch_wait_ms=_STATE_FETCH_WAIT_MS,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._assigned = 0
        self.connections: set[MQTTConnection] = set()
        self.clients: dict[str, MQTTConnection] = {}
        self._paused: set[MQTTConnection] = set()
        # Labelled children cached: labels() per message cost ~10 % of a core.
        self._in_counters: dict[str, Counter] = {}
        self._out_counters = [MESSAGES_OUT_TOTAL.labels(str(q)) for q in (0, 1, 2)]
        self._server: asyncio.Server | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._listeners: list[Listener] = []

    # lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to Kafka, then open the MQTT port; ready when this returns."""
        if self.config.metrics_port:
            start_http_server(self.config.metrics_port, addr=self.config.metrics_host)
        await self.ingest.start()
        # Retained messages and sessions are materialised before the node accepts a client.
        await self.retained_reader.start()
        await self.sessions_reader.start()
        await self.delivery.start()
        release_free_memory()
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: MQTTConnection(self),
                self.config.mqtt_host,
                self.config.mqtt_port,
                # Several node processes may share the port (one per core, DESIGN §8).
                reuse_port=self.config.reuse_port or None,
            )
        except OSError as exc:
            await self.delivery.stop()
            await self.retained_reader.stop()
            await self.sessions_reader.stop()
            await self.ingest.stop()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"MQTT port {self.config.mqtt_host}:{self.config.mqtt_port} is already in "
                    "use; set BAYOU_MQTT_PORT to a free port"
                ) from None
            raise
        try:
            self._listeners = await start_extra_listeners(self.config, lambda: MQTTConnection(self))
        except ListenerError:
            self._server.close()
            await self.delivery.stop()
            await self.retained_reader.stop()
            await self.sessions_reader.stop()
            await self.ingest.stop()
            raise
        self._keepalive_task = asyncio.create_task(self._keepalive_sweep())
        READY.set(1)

    async def stop(self) -> None:
        """Close the listener and every client, flush Kafka writes, stop consuming."""
        READY.set(0)
        if self._keepalive_task:
            self._keepalive_task.cancel()
        if self._server:
            self._server.close()
        for listener in self._listeners:
            listener.close()
        for conn in list(self.connections):
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        # Let connection_lost run (it saves sessions) before the producer flushes.
        await asyncio.sleep(0)
        # WebSocket clients end after a closing handshake; their connection_lost must run
        # before the producer flushes too.
        await close_listeners(self._listeners)
        self._listeners = []
        await self.ingest.stop()
        await self.delivery.stop()
        await self.retained_reader.stop()
        await self.sessions_reader.stop()

    @property
    def port(self) -> int:
        """The bound MQTT port (useful when configured as 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    # connections -------------------------------------------------------------------------

    def connection_opened(self, conn: MQTTConnection) -> None:
        """A TCP connection arrived (no CONNECT yet)."""
        self.connections.add(conn)
        CONNECTIONS.set(len(self.connections))

    def client_connected(self, conn: MQTTConnection, clean: bool) -> bool:
        """CONNECT accepted; return CONNACK's session-present flag.

        A client id connected twice keeps only the newest connection [MQTT-3.1.4-2]; on this
        node the older one hands its session over directly, across nodes through Kafka.
        """
        assert conn.client_id is not None
        old = self.clients.get(conn.client_id)
        handed = None
        if old is not None and old is not conn:
            log.info("client %s connected again: closing the older connection", conn.client_id)
            TAKEOVERS_TOTAL.inc()
            if old.session is not None and not old.session.clean:
                handed = self.sessions.snapshot(old)
            old.taken_over = True
            old.close()
        self.clients[conn.client_id] = conn
        CONNECTS_TOTAL.inc()
        return self.sessions.connect(conn, clean, handed)

    def connection_closed(self, conn: MQTTConnection) -> None:
        """Save or drop the connection's session, then forget the connection."""
        self.connections.discard(conn)
        self._paused.discard(conn)
        if conn.client_id is not None:
            self.sessions.disconnected(conn)
            if self.clients.get(conn.client_id) is conn:
                del self.clients[conn.client_id]
        self.subscriptions.remove_all(conn, list(conn.filters))
        conn.filters.clear()
        CONNECTIONS.set(len(self.connections))
        SUBSCRIPTIONS.set(self.subscriptions.count)

    def write_session(
        self,
        client_id: str,
        value: bytes | None,
        then: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        """Write a session record (None: a tombstone) to the sessions topic.

        Applied to this node's store at once, so a reconnect here sees it even before the
        reader gets to it; the reader applies it again in log order.
        """
        self.sessions.store.put(client_id, value)
        self.ingest.submit(self.config.sessions_topic, client_id.encode(), value, [], then)

    def assign_client_id(self) -> str:
        """A client id for a CONNECT with an empty one [MQTT-3.1.3-6], unique across nodes."""
        self._assigned += 1
        return f"bayou-{self.config.node_id}-{self._assigned}"

    def track(self, task: asyncio.Task[None]) -> None:
        """Cancel ``task`` when the node stops."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def store_retained(
        self, topic: str, payload: bytes, qos: int, headers: Headers, done: DoneCallback | None
    ) -> None:
        """Write a retained message (empty payload: a tombstone that clears it) to Kafka.

        It is applied to this node's store as soon as Kafka acknowledges it, so a subscriber
        on this node sees it right after the publisher's PUBACK; other nodes apply it when
        their reader gets to it.
        """

        if done is None:
            # QoS 0 (or a will): nobody waits for Kafka, so a subscriber right after the
            # publish must find it already.
            self.retained.put(topic, payload, qos)

            self.ingest.submit(
                self.config.retained_topic, topic.encode(), payload or None, headers, None
            )
            return

        def stored(exc: BaseException | None) -> None:
            if exc is None:
                self.retained.put(topic, payload, qos)
            done(exc)

        self.ingest.submit(
            self.config.retained_topic, topic.encode(), payload or None, headers, stored
        )

    def publish_will(self, conn: MQTTConnection, will: Will) -> None:
        """Publish a client's will as if the client had published it."""
        assert conn.client_id is not None
        route = self.router.route(will.topic)
        self.count_in(route.kafka_topic)
        headers = self.headers_for(will.topic, will.qos, will.retain, conn.client_id)
        self.ingest.submit(route.kafka_topic, route.key, will.payload, headers, None)
        if will.retain:
            self.store_retained(will.topic, will.payload, will.qos, headers, None)
        WILLS_TOTAL.inc()
        log.info("client %s gone without DISCONNECT: will published to %s", conn.client_id,
                 will.topic)  # fmt: skip

    def subscriptions_changed(self, conn: MQTTConnection) -> None:
        """A client subscribed or unsubscribed."""
        SUBSCRIPTIONS.set(self.subscriptions.count)

    def count_in(self, kafka_topic: str) -> None:
        """Count one publish received for ``kafka_topic``."""
        counter = self._in_counters.get(kafka_topic)
        if counter is None:
            counter = self._in_counters[kafka_topic] = MESSAGES_IN_TOTAL.labels(kafka_topic)
        counter.inc()

    def throttle(self, conn: MQTTConnection) -> None:
        """Stop reading from a publisher while too much waits for Kafka."""
        if self.ingest.pending > _PENDING_HIGH and conn.transport is not None:
            conn.transport.pause_reading()
            self._paused.add(conn)

    def _resume_paused(self) -> None:
        if self._paused and self.ingest.pending < _PENDING_LOW:
            for conn in self._paused:
                if conn.transport is not None and not conn.closed:
                    conn.transport.resume_reading()
            self._paused.clear()

    async def _keepalive_sweep(self) -> None:
        # One sweep a second instead of a timer per connection: idle clients cost nothing.
        ticks = 0
        while True:
            await asyncio.sleep(0.2)
            ticks += 1
            if ticks % 5 == 0:
                self.sessions.checkpoint()
            if ticks % 150 == 0:
                # Every 30 s: memory freed by closed connections goes back to the system.
                release_free_memory(collect=False)
            self._resume_paused()
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.fresh:
                    wall_ms = time.time() * 1000
                    for filt, since in list(conn.fresh.items()):
                        if wall_ms - since > 10_000:
                            del conn.fresh[filt]
                if conn.keep_alive and now - conn.last_seen > 1.5 * conn.keep_alive:
                    conn.abort("keep-alive timeout", "keepalive_timeout")  # [MQTT-3.1.2-24]

    # Kafka ↔ MQTT ------------------------------------------------------------------------

    def headers_for(self, topic: str, qos: int, retain: bool, client_id: str) -> Headers:
        """Record headers per the contract (DESIGN §3)."""
        return [
            ("mqtt.topic", topic.encode()),
            ("mqtt.qos", _QOS_BYTES[qos]),
            ("mqtt.retain", b"1" if retain else b"0"),
            ("mqtt.client_id", client_id.encode()),
            (H_INGRESS_TS, str(int(time.time() * 1000)).encode()),
        ]

    def deliver(self, records: list[Record]) -> None:
        """Deliver Kafka records to the matching subscribers on this node."""
        self._deliver(records, self.subscriptions.match)

    def _deliver(
        self, records: list[Record], match: Callable[[str], list[tuple[MQTTConnection, int]]]
    ) -> None:
        now_ms = time.time() * 1000
        # One socket write per connection per batch: a write per message cost ~15 % CPU.
        out: dict[MQTTConnection, list[bytes]] = {}
        qos2_to_persist: set[MQTTConnection] = set()
        sent = [0, 0, 0]
        for index, rec in enumerate(records):
            payload = rec.value or b""
            topic_b = qos_b = ts_b = rid = cid_b = None
            for k, v in rec.headers:
                if k == H_MQTT_TOPIC:
                    topic_b = v
                elif k == H_MQTT_QOS:
                    qos_b = v
                elif k == H_INGRESS_TS:
                    ts_b = v
                elif k == H_RESULT_ID:
                    rid = v
                elif k == H_MQTT_CLIENT_ID:
                    cid_b = v
            if rid is not None and self.dedup.is_duplicate(
                rec.headers, (rec.topic, rec.partition, rec.offset)
            ):
                continue
            if topic_b is not None:
                topic = topic_b.decode("utf-8", "replace")
                msg_qos = _QOS.get(qos_b or b"0", 0)
            else:
                egress = self.egress.route(rec.topic, rec.key)
                if egress is None:
                    continue
                topic = egress.mqtt_topic
                msg_qos = egress.qos if qos_b is None else _QOS.get(qos_b, 0)
            targets = match(topic)
            if not targets:
                continue
            heads: dict[int, bytes] = {}
            for conn, sub_qos in targets:
                if conn.replaying:
                    continue  # catching up from Kafka (ingress/catch_up.py): not live yet
                if (
                    conn.fresh
                    and cid_b is not None  # a client's publish, stamped by the node
                    and ts_b is not None
                    and conn.published_before_subscribing(topic, int(ts_b))
                ):
                    continue
                qos = min(msg_qos, sub_qos)
                if qos and len(conn.inflight_out) >= conn.max_inflight:
                    # Its in-flight window is full: it leaves live delivery and catches up
                    # from Kafka once it acknowledges, instead of queueing in memory.
                    start_catch_up(self, conn, self._cursor_at(records, index), [])
                    continue
                head = heads.get(qos)
                if head is None:
                    head = heads[qos] = codec.publish_parts(topic, payload, qos)[0]
                parts = out.get(conn)
                if parts is None:
                    parts = out[conn] = []
                if qos:
                    pid = conn.next_packet_id()
                    conn.inflight_out[pid] = (rec.topic, rec.partition, rec.offset, qos, False)
                    parts += (head, pid.to_bytes(2, "big"), payload)
                    if qos == 2 and conn.session is not None and not conn.session.clean:
                        qos2_to_persist.add(conn)
                else:
                    parts += (head, payload)
                sent[qos] += 1
            if ts_b:
                END_TO_END_LATENCY.observe(max(0.0, (now_ms - int(ts_b)) / 1000))
        for conn, parts in out.items():
            if conn in qos2_to_persist:
                conn.hold()
                conn.write(b"".join(parts))
                self.sessions.save_then_release(conn)
            else:
                conn.write(b"".join(parts))
        for qos in (0, 1, 2):
            if sent[qos]:
                self._out_counters[qos].inc(sent[qos])

    def _cursor_at(self, records: list[Record], index: int) -> dict[tuple[str, int], int]:
        """Per partition, the first offset not yet handled when delivery stops at ``index``."""
        cursor = dict(self.delivery.positions)
        for rec in records[index:]:
            key = (rec.topic, rec.partition)
            if rec.offset < cursor.get(key, rec.offset + 1):
                cursor[key] = rec.offset
        return cursor


async def serve(config: IngressConfig, stop: asyncio.Event) -> None:
    """Run a node until ``stop`` is set."""
    node = IngressNode(config)
    await node.start()
    try:
        await stop.wait()
    finally:
        await node.stop()


def main(config: IngressConfig) -> None:
    """Run a node in this process until SIGINT or SIGTERM."""

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    asyncio.run(_run())
