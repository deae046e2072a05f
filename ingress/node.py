"""An ingress node: the wiring of its parts and its lifecycle; the only module importing them all.

The data path through the parts it builds:

- in: a listener accepts a client, :class:`~ingress.wire.connection.MQTTConnection` parses its
  packets, :class:`~ingress.inbound.Inbound` routes each PUBLISH and hands it to
  :class:`~ingress.kafka.producer.IngestProducer`, which writes it to Kafka;
- out: the delivery :class:`~ingress.kafka.topic_reader.TopicReader` follows the route topics
  and ``bayou.outbound``, :class:`~ingress.outbound.live.LiveDelivery` sends each record to the
  matching subscribers through :mod:`ingress.outbound.send`, and
  :class:`~ingress.outbound.catch_up.CatchUp` serves resumed sessions and slow clients;
  :class:`~ingress.outbound.shared.SharedSubscriptions` sends each record of a shared
  subscription to one member, over a Kafka consumer group per subscription;
- state: two more readers materialise ``bayou.retained`` and ``bayou.sessions`` before the node
  accepts a client; :class:`~ingress.session_manager.SessionManager` keeps sessions.

The parts know the node only through the narrow protocols they declare (``ConnectionNode``,
``SessionNode``, ``CatchUpNode``), which this class provides.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import gc
import logging
import signal
import time
from collections.abc import Callable, Mapping

from prometheus_client import start_http_server

from ingress.config import IngressConfig
from ingress.inbound import Inbound
from ingress.kafka.producer import IngestProducer
from ingress.kafka.topic_reader import TopicReader
from ingress.metrics import (
    CONNECTIONS,
    CONNECTS_TOTAL,
    READY,
    SUBSCRIPTIONS,
    TAKEOVERS_TOTAL,
    init_label_values,
)
from ingress.outbound.catch_up import CatchUp, Replay
from ingress.outbound.dedup import ResultDedup
from ingress.outbound.live import LiveDelivery
from ingress.outbound.send import Sender
from ingress.outbound.shared import SharedSubscriptions
from ingress.routing.rules import EgressRouter, Router
from ingress.security.guard import Guard
from ingress.security.limits import ConnectionLimits
from ingress.session_manager import SessionManager
from ingress.state.retained import RetainedStore
from ingress.state.sessions import Pending
from ingress.state.subscriptions import SubscriptionTable
from ingress.wire.connection import MQTTConnection
from ingress.wire.listeners import Listener, ListenerError, close_listeners, start_extra_listeners
from kafkaio.reader import TP, PartitionReader

log = logging.getLogger(__name__)

# State topics change rarely and nobody waits on them: a long fetch wait spares the node and
# Kafka ~200 empty fetches a second per reader (the embedded broker holds a fetch this long).
_STATE_FETCH_WAIT_MS = 100


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
        self.producer = IngestProducer(
            config.kafka_bootstrap, config.producer_linger_ms, security=config.kafka_security
        )
        router = Router(config.routes, config.default_topic)
        self.retained = RetainedStore()
        self.inbound = Inbound(
            router, self.producer, self.retained, config.retained_topic, config.commands_topic
        )
        self.subscriptions: SubscriptionTable[MQTTConnection] = SubscriptionTable()
        self.connections: set[MQTTConnection] = set()
        self.clients: dict[str, MQTTConnection] = {}
        self.limits: ConnectionLimits[MQTTConnection] = ConnectionLimits(config.security.limits)
        self.sessions = SessionManager(self)
        # Loads the password file, keys and ACL file: a bad one stops the node before it starts.
        self.guard = Guard.build(config.security)
        # Records without an mqtt.topic header get one from the egress rules (DESIGN §3).
        egress = EgressRouter(config.egress_routes)
        self.sender = Sender(
            egress,
            ResultDedup(),
            self.sessions.save_then_release,
            config.security.limits.max_write_buffer,
            acl_on=self.guard.acl is not None,
        )
        self.catch_up = CatchUp(self)
        delivery_topics = list(
            dict.fromkeys(router.kafka_topics() + config.outbound_topics + egress.kafka_topics())
        )
        # Live delivery reads the reader's positions, so the reader calls it through a lambda.
        self._metric_topics = (router.kafka_topics(), delivery_topics)
        self.delivery_reader = TopicReader(
            config.kafka_bootstrap,
            delivery_topics,
            lambda records: self.live.deliver(records),
            f"delivery-{config.node_id}",
            fetch_wait_ms=config.fetch_wait_ms,
            security=config.kafka_security,
        )
        self.live = LiveDelivery(
            self.sender, self.subscriptions, self.catch_up, self.delivery_reader.positions
        )
        # $share/{group}/{filter}: each message to one member, through a consumer group each.
        self.shares = SharedSubscriptions(
            config, self.sender, delivery_topics, self.delivery_reader.positions
        )
        self._state_readers = [
            TopicReader(
                config.kafka_bootstrap,
                [config.retained_topic],
                self.retained.apply,
                f"retained-{config.node_id}",
                from_beginning=True,
                fetch_wait_ms=_STATE_FETCH_WAIT_MS,
                security=config.kafka_security,
            ),
            TopicReader(
                config.kafka_bootstrap,
                [config.sessions_topic],
                self.sessions.store.apply,
                f"sessions-{config.node_id}",
                from_beginning=True,
                fetch_wait_ms=_STATE_FETCH_WAIT_MS,
                security=config.kafka_security,
            ),
        ]
        self._tasks: set[asyncio.Task[None]] = set()
        self._assigned = 0
        # MQTT 5 wills waiting out their Will Delay Interval, by client id.
        self._delayed_wills: dict[str, tuple[asyncio.TimerHandle, Callable[[], None]]] = {}
        self.sessions.store.owner_listeners.append(self._owner_seen)
        self._stopping = False
        self._server: asyncio.Server | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._listeners: list[Listener] = []

    # lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to Kafka, then open the MQTT port; ready when this returns."""
        init_label_values(*self._metric_topics)
        if self.config.metrics_port:
            start_http_server(self.config.metrics_port, addr=self.config.metrics_host)
        await self.producer.start()
        # Retained messages and sessions are materialised before the node accepts a client.
        for reader in self._state_readers:
            await reader.start()
        await self.delivery_reader.start()
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
            await self._stop_kafka()
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
            await self._stop_kafka()
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
        self._stopping = True
        for conn in list(self.connections):
            conn.shutdown()
        for handle, publish in self._delayed_wills.values():
            handle.cancel()
            publish()
        self._delayed_wills.clear()
        for task in list(self._tasks):
            task.cancel()
        # Let connection_lost run (it saves sessions) before the producer flushes.
        await asyncio.sleep(0)
        # WebSocket clients end after a closing handshake; their connection_lost must run
        # before the producer flushes too.
        await close_listeners(self._listeners)
        self._listeners = []
        await self.shares.stop()
        await self._stop_kafka()
        self.guard.close()

    async def _stop_kafka(self) -> None:
        await self.producer.stop()
        await self.delivery_reader.stop()
        for reader in self._state_readers:
            await reader.stop()

    @property
    def port(self) -> int:
        """The bound MQTT port (useful when configured as 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def positions(self) -> Mapping[TP, int]:
        """Per delivery partition, the next offset live delivery hands over."""
        return self.delivery_reader.positions

    def track(self, task: asyncio.Task[None]) -> None:
        """Cancel ``task`` when the node stops."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # connections (ConnectionNode, SessionNode, CatchUpNode) ------------------------------

    def connection_opened(self, conn: MQTTConnection) -> None:
        """A TCP connection arrived (no CONNECT yet): closed at once, before anything is read,
        if a connection limit refuses it (docs/security.md, Limits and floods)."""
        transport = conn.transport
        assert transport is not None
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) and peer else None
        refused = self.limits.admit(conn, host, len(self.connections), time.monotonic())
        if refused is not None:
            log.debug("refusing a connection from %s: %s", conn.peer, refused)
            conn.close()
            return
        self.connections.add(conn)
        CONNECTIONS.set(len(self.connections))
        # Above this many bytes queued the transport calls conn.pause_writing(): live delivery
        # then drops QoS 0 to it and leaves QoS 1/2 in Kafka (ingress/outbound/live.py).
        try:
            transport.set_write_buffer_limits(high=self.config.security.limits.max_write_buffer)
        except NotImplementedError:  # a transport without flow control
            pass

    def client_connected(self, conn: MQTTConnection, clean: bool) -> bool:
        """CONNECT accepted; return CONNACK's session-present flag.

        A client id connected twice keeps only the newest connection [MQTT-3.1.4-2]; on this
        node the older one hands its session over directly, across nodes through Kafka.
        """
        assert conn.client_id is not None
        # A new connection of the session cancels its delayed will; one with a clean start
        # ends the session, and the will goes out now (§3.1.3.2.2).
        self._end_will(conn.client_id, publish=clean)
        old = self.clients.get(conn.client_id)
        handed = None
        if old is not None and old is not conn:
            log.info("client %s connected again: closing the older connection", conn.client_id)
            TAKEOVERS_TOTAL.inc()
            if old.persistent:
                handed = self.sessions.snapshot(old)
            old.take_over(ends_session=clean)
        self.clients[conn.client_id] = conn
        self.limits.connected(conn)
        CONNECTS_TOTAL.inc()
        return self.sessions.connect(conn, clean, handed)

    def connection_closed(self, conn: MQTTConnection) -> None:
        """Save or drop the connection's session, then forget the connection."""
        self.connections.discard(conn)
        self.limits.connected(conn)
        self.inbound.forget(conn)
        if conn.client_id is not None:
            self.sessions.disconnected(conn)
            if self.clients.get(conn.client_id) is conn:
                del self.clients[conn.client_id]
        CONNECTIONS.set(len(self.connections))

    def delay_will(self, client_id: str, seconds: float, publish: Callable[[], None]) -> None:
        """Publish a will in ``seconds`` unless the client connects again first: here
        (``client_connected``) or on another node (its ownership record, ``_owner_seen``)."""
        self._end_will(client_id, publish=False)
        if self._stopping:
            # A stopping node cannot wait out a Will Delay Interval: the will goes now.
            publish()
            return

        def due() -> None:
            self._delayed_wills.pop(client_id, None)
            publish()

        handle = asyncio.get_running_loop().call_later(seconds, due)
        self._delayed_wills[client_id] = (handle, publish)

    def _end_will(self, client_id: str, publish: bool) -> None:
        """Stop waiting on a delayed will: publish it now, or cancel it."""
        pending = self._delayed_wills.pop(client_id, None)
        if pending is not None:
            pending[0].cancel()
            if publish:
                pending[1]()

    def _owner_seen(self, client_id: str, owner: str, clean_start: bool) -> None:
        # A connection of the client on another node: its delayed will is not sent, unless
        # that connection's clean start ended the session.
        if client_id in self._delayed_wills and not owner.startswith(f"{self.config.node_id}/"):
            self._end_will(client_id, publish=clean_start)

    def assign_client_id(self) -> str:
        """A client id for a CONNECT with an empty one [MQTT-3.1.3-6], unique across nodes."""
        self._assigned += 1
        return f"bayou-{self.config.node_id}-{self._assigned}"

    def subscriptions_changed(self) -> None:
        """A client subscribed or unsubscribed."""
        SUBSCRIPTIONS.set(self.subscriptions.count)

    def window_opened(self, conn: MQTTConnection) -> None:
        """A connection catching up has room in its in-flight window again."""
        self.catch_up.wake()

    def start_catch_up(
        self, conn: MQTTConnection, served: Mapping[TP, int], pending: list[Pending]
    ) -> None:
        """Take ``conn`` off live delivery and bring it up to date from Kafka."""
        self.catch_up.start(conn, served, pending)

    def replay_offsets(self, since_ms: int) -> asyncio.Future[dict[TP, int]]:
        """Per delivery partition, the first offset at or after ``since_ms`` (on a thread:
        it asks Kafka)."""
        partitions = list(self.positions)
        config = self.config

        def lookup() -> dict[TP, int]:
            reader = PartitionReader(
                config.kafka_bootstrap, f"replay-{config.node_id}", security=config.kafka_security
            )
            try:
                return reader.offsets_for_time(partitions, since_ms)
            finally:
                reader.close()

        return asyncio.get_running_loop().run_in_executor(None, lookup)

    def start_replay(
        self, conn: MQTTConnection, filters: list[str], starts: Mapping[TP, int], since_ms: int
    ) -> bool:
        """Send ``conn`` the history of ``filters`` since ``since_ms`` from ``starts``, then
        live: catch-up up to the node's positions now, where the subscription's live
        delivery begins (no gap, no duplicate). False if it is catching up already."""
        boundary = dict(self.positions)
        served = {k: min(o, boundary.get(k, o)) for k, o in starts.items()}
        return self.catch_up.start(conn, served, [], Replay(tuple(filters), boundary, since_ms))

    async def _keepalive_sweep(self) -> None:
        # One sweep a second instead of a timer per connection: idle clients cost nothing.
        ticks = 0
        while True:
            await asyncio.sleep(0.2)
            ticks += 1
            if ticks % 5 == 0:
                self.sessions.checkpoint()
            if ticks % 25 == 0:
                self.sessions.expire(int(time.time() * 1000))
            if ticks % 150 == 0:
                # Every 30 s: memory freed by closed connections goes back to the system.
                release_free_memory(collect=False)
            self.inbound.resume_paused()
            self.shares.tick()
            now = time.monotonic()
            wall_ms = time.time() * 1000
            # Oldest first, only the expired ones are read: idle sockets cost no sweep time.
            expired = self.limits.sweep(now)
            if expired:
                log.info("closing %d sockets that sent no CONNECT in time", len(expired))
                for conn in expired:
                    conn.abort("no CONNECT within the connect timeout", None)
            for conn in list(self.connections):
                if conn.fresh:
                    conn.forget_fresh(wall_ms)
                if conn.keep_alive and now - conn.last_seen > 1.5 * conn.keep_alive:
                    conn.abort("keep-alive timeout", "keepalive_timeout")  # [MQTT-3.1.2-24]


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
