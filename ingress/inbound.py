"""The inbound path: an MQTT PUBLISH (or a will) becomes a Kafka record.

A connection (:mod:`ingress.wire.connection`) hands each PUBLISH to :meth:`Inbound.publish`:
the route rules (:mod:`ingress.routing.rules`) pick the Kafka topic and key, the record
contract (:func:`ingress.contract.publish_headers`) gives the headers, and the producer
(:mod:`ingress.kafka.producer`) writes it with ``acks=all``, calling ``done`` once Kafka has
it. A retained publish is also written to ``bayou.retained``. While too many records wait for
Kafka, the node stops reading from publishers (backpressure).

Closed-loop commands (:mod:`ingress.contract.commands`): a publish to a command's response topic
is written as any other, and its ``acknowledged`` event to ``bayou.commands`` besides; a
client's acknowledgement of a command's PUBLISH becomes its ``delivered`` event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from ingress.contract import (
    COMMANDS_TOPIC,
    H_RETAINED_WRITE,
    Headers,
    property_headers,
    publish_headers,
)
from ingress.contract.commands import (
    RESPONSE_MARK,
    acknowledged_event,
    command_id_of_response,
    delivered_event,
    refused_event,
)
from ingress.kafka.producer import DoneCallback, IngestProducer
from ingress.metrics import COMMAND_EVENTS, WILLS_TOTAL, count_in
from ingress.routing.rules import Router
from ingress.state.retained import RetainedStore

log = logging.getLogger(__name__)

# Backpressure: above HIGH unacknowledged records, stop reading from publishers until LOW.
_PENDING_HIGH = 20_000
_PENDING_LOW = 5_000


class Publisher(Protocol):
    """What the inbound path needs of a connection: who publishes, and a transport to pause."""

    @property
    def client_id_utf8(self) -> bytes: ...

    @property
    def transport(self) -> asyncio.Transport | None: ...

    @property
    def closed(self) -> bool: ...


class Inbound:
    """Routes publishes to Kafka with the contract's headers; pauses publishers under load."""

    def __init__(
        self,
        router: Router,
        producer: IngestProducer,
        retained: RetainedStore,
        retained_topic: str,
        commands_topic: str = COMMANDS_TOPIC,
    ) -> None:
        self.commands_topic = commands_topic
        self.router = router
        self.producer = producer
        self.retained = retained
        self.retained_topic = retained_topic
        self._paused: set[Publisher] = set()

    def publish(
        self,
        conn: Publisher,
        topic: str,
        qos: int,
        retain: bool,
        payload: bytes,
        done: DoneCallback | None,
        extra: Headers | None = None,
    ) -> None:
        """Write one PUBLISH to Kafka; ``done`` (QoS 1/2) runs once for each record written.

        A retained publish writes two records (its route's and ``bayou.retained``'s).
        ``extra``: headers after the contract's (an MQTT 5 PUBLISH's properties).
        """
        route = self.router.route(topic)
        count_in(route.kafka_topic, qos)
        now_ms = time.time_ns() // 1_000_000
        headers = publish_headers(topic.encode(), qos, retain, conn.client_id_utf8, now_ms)
        if extra:
            headers += extra
        producer = self.producer
        producer.submit(route.kafka_topic, route.key, payload, headers, done)
        if RESPONSE_MARK in topic:
            self._responded(topic, conn.client_id_utf8, now_ms, payload)
        if retain:
            self.store_retained(topic, payload, qos, headers, done)
        if producer.pending > _PENDING_HIGH and conn.transport is not None:
            conn.transport.pause_reading()
            self._paused.add(conn)

    def publish_will(
        self,
        client_id: str,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        extra: Headers | None = None,
    ) -> None:
        """Publish a client's will as if the client had published it (nobody waits for it)."""
        route = self.router.route(topic)
        count_in(route.kafka_topic, qos)
        headers = publish_headers(
            topic.encode(), qos, retain, client_id.encode(), time.time_ns() // 1_000_000
        )
        if extra:
            headers += extra
        self.producer.submit(route.kafka_topic, route.key, payload, headers, None)
        if retain:
            self.store_retained(topic, payload, qos, headers, None)
        WILLS_TOTAL.inc()
        log.info("client %s gone without DISCONNECT: will published to %s", client_id, topic)

    def store_retained(
        self, topic: str, payload: bytes, qos: int, headers: Headers, done: DoneCallback | None
    ) -> None:
        """Write a retained message (empty payload: a tombstone that clears it) to Kafka.

        It is applied to this node's store as soon as Kafka acknowledges it, so a subscriber
        on this node sees it right after the publisher's PUBACK; other nodes apply it when
        their reader gets to it. The store sorts out acknowledgements and reads that arrive
        late (:class:`~ingress.state.retained.RetainedStore`).
        """
        store = self.retained
        w = store.written(topic, payload, qos, property_headers(headers))
        if done is None:
            # QoS 0 (or a will): nobody waits for Kafka, so a subscriber right after the
            # publish must find it already.
            store.apply_now(topic, w)

        def stored(exc: BaseException | None) -> None:
            if exc is None:
                store.acknowledged(topic, w)
            else:
                store.failed(topic, w)
            if done is not None:
                done(exc)

        self.producer.submit(
            self.retained_topic,
            topic.encode(),
            payload or None,
            [*headers, (H_RETAINED_WRITE, w.id)],
            stored,
        )

    def _responded(self, topic: str, client_id: bytes, now_ms: int, payload: bytes) -> None:
        command = command_id_of_response(topic)
        if command is None:
            return
        event = acknowledged_event(client_id.decode("utf-8", "replace"), now_ms, payload)
        # Written besides the response itself, not waited for: the publisher's PUBACK says
        # its response is in Kafka; the event follows it through the same producer.
        self._command_event(command.encode(), "acknowledged", event)

    def command_delivered(self, command: bytes, client_id: str) -> None:
        """The client ``client_id`` acknowledged the PUBLISH of command ``command``."""
        event = delivered_event(client_id, time.time_ns() // 1_000_000)
        self._command_event(command, "delivered", event)

    def command_refused(self, command: bytes, client_id: str, reason_code: int) -> None:
        """The MQTT 5 client ``client_id`` refused command ``command``'s PUBLISH."""
        event = refused_event(client_id, time.time_ns() // 1_000_000, reason_code)
        self._command_event(command, "refused", event)

    def _command_event(self, command: bytes, kind: str, event: bytes) -> None:
        self.producer.submit(self.commands_topic, command, event, [], None)
        COMMAND_EVENTS.labels(kind).inc()

    def resume_paused(self) -> None:
        """Read from paused publishers again once Kafka has caught up."""
        if self._paused and self.producer.pending < _PENDING_LOW:
            for conn in self._paused:
                if conn.transport is not None and not conn.closed:
                    conn.transport.resume_reading()
            self._paused.clear()

    def forget(self, conn: Publisher) -> None:
        """A connection closed: nothing to resume."""
        self._paused.discard(conn)
