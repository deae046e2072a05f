"""Test clients for MQTT 5: paho-mqtt in MQTT 5 mode with blocking waits, and a raw socket
that speaks Bayou's own MQTT 5 codec (for what a well-behaved client library never sends)."""

from __future__ import annotations

import queue
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingress.wire import codec
from ingress.wire.codec import CONNECT, Framer, Packet, encode_remaining_length
from ingress.wire.properties import WILL, Properties, encode_properties


@dataclass
class Received5:
    """A PUBLISH an MQTT 5 client received, with its properties."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    user_properties: list[tuple[str, str]]
    content_type: str | None
    correlation_data: bytes | None
    response_topic: str | None
    payload_format: int | None
    message_expiry: int | None
    subscription_ids: list[int]


def props(packet: int, **values: Any) -> PahoProperties:
    """paho Properties of ``packet`` (a PacketTypes value) with the given attributes
    (paho's names: UserProperty, ContentType, MessageExpiryInterval...)."""
    p = PahoProperties(packet)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(p, name, value)
    return p


@dataclass
class Mqtt5:
    """A paho client in MQTT 5 mode over a real socket."""

    port: int
    client_id: str
    clean_start: bool = True
    session_expiry: int | None = None
    connect_properties: dict[str, Any] = field(default_factory=dict)
    messages: queue.Queue[Received5] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.connack: queue.Queue[tuple[int, bool, Any]] = queue.Queue()
        self.disconnects: queue.Queue[int] = queue.Queue()
        self._subacks: queue.Queue[list[int]] = queue.Queue()
        self.client.on_subscribe = lambda c, u, mid, codes, p: self._subacks.put(
            [int(x.value) for x in codes]
        )
        self._unsubacks: queue.Queue[list[int]] = queue.Queue()
        self.client.on_unsubscribe = lambda c, u, mid, codes, p: self._unsubacks.put(
            [int(x.value) for x in codes]
        )

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, p: Any) -> None:
        self.connack.put((int(rc.value), bool(flags.session_present), p))

    def _on_disconnect(self, c: Any, u: Any, flags: Any, rc: Any, p: Any) -> None:
        self.disconnects.put(int(rc.value))

    def _on_message(self, c: Any, u: Any, msg: Any) -> None:
        p = msg.properties
        self.messages.put(
            Received5(
                msg.topic,
                bytes(msg.payload),
                msg.qos,
                bool(msg.retain),
                list(getattr(p, "UserProperty", []) or []),
                getattr(p, "ContentType", None),
                getattr(p, "CorrelationData", None),
                getattr(p, "ResponseTopic", None),
                getattr(p, "PayloadFormatIndicator", None),
                getattr(p, "MessageExpiryInterval", None),
                list(getattr(p, "SubscriptionIdentifier", []) or []),
            )
        )

    def connect(self, keepalive: int = 30) -> tuple[int, bool, Any]:
        """Connect and wait for CONNACK: (reason code, session present, properties)."""
        values = dict(self.connect_properties)
        if self.session_expiry is not None:
            values["SessionExpiryInterval"] = self.session_expiry
        p = props(PacketTypes.CONNECT, **values) if values else None
        self.client.connect(
            "127.0.0.1", self.port, keepalive=keepalive, clean_start=self.clean_start,
            properties=p,
        )  # fmt: skip
        self.client.loop_start()
        return self.connack.get(timeout=10)

    def subscribe(
        self,
        topic: str,
        qos: int = 1,
        *,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        sub_id: int | None = None,
    ) -> list[int]:
        """Subscribe and wait for SUBACK: its reason codes."""
        opts = SubscribeOptions(
            qos=qos, noLocal=no_local, retainAsPublished=retain_as_published,
            retainHandling=retain_handling,
        )  # fmt: skip
        p = None if sub_id is None else props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=sub_id)
        self.client.subscribe(topic, options=opts, properties=p)
        return self._subacks.get(timeout=10)

    def unsubscribe(self, topic: str) -> list[int]:
        self.client.unsubscribe(topic)
        return self._unsubacks.get(timeout=10)

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False, **p: Any
    ) -> paho.MQTTMessageInfo:
        """Publish with PUBLISH properties in paho's names (``UserProperty=[(k, v)]``...)."""
        properties = props(PacketTypes.PUBLISH, **p) if p else None
        return self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)

    def expect(self, timeout: float = 20) -> Received5:
        return self.messages.get(timeout=timeout)

    def nothing(self, wait: float = 1.0) -> bool:
        """No message arrives within ``wait`` s."""
        try:
            self.messages.get(timeout=wait)
        except queue.Empty:
            return True
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # As tests/helpers.Mqtt: paho leaves its wake-up socket pair open otherwise.
        self.client._reset_sockets(sockpair_only=True)


class Raw5:
    """An MQTT 5 client on a plain socket: send any bytes, read packets back."""

    def __init__(
        self,
        port: int,
        client_id: str,
        connect_props: Properties | None = None,
        will: tuple[str, bytes, Properties] | None = None,
        clean_start: bool = True,
    ):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.framer = Framer(16 * 1024 * 1024)
        self._pending: list[Packet] = []
        block = encode_properties(connect_props or Properties(), CONNECT)
        cid = client_id.encode()
        flags = (0x02 if clean_start else 0) | (0x04 if will else 0)
        payload = len(cid).to_bytes(2, "big") + cid
        if will is not None:
            topic, message, will_props = will
            payload += encode_properties(will_props, WILL)
            payload += len(topic.encode()).to_bytes(2, "big") + topic.encode()
            payload += len(message).to_bytes(2, "big") + message
        # keep-alive 60 s
        body = b"\x00\x04MQTT\x05" + bytes((flags,)) + b"\x00\x3c" + block + payload
        self.send(bytes((0x10,)) + encode_remaining_length(len(body)) + body)
        self.connack = self.read()
        assert self.connack.type == codec.CONNACK, self.connack

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def subscribe(self, topic_filter: str, options: int, props: Properties | None = None) -> Packet:
        """SUBSCRIBE (packet id 1) to one filter with its options byte; the SUBACK."""
        f = topic_filter.encode()
        block = encode_properties(props or Properties(), codec.SUBSCRIBE)
        body = b"\x00\x01" + block + len(f).to_bytes(2, "big") + f + bytes((options,))
        self.send(bytes((0x82,)) + encode_remaining_length(len(body)) + body)
        ack = self.read()
        assert ack.type == codec.SUBACK, ack
        return ack

    def read(self, timeout: float = 10.0) -> Packet:
        """The next packet; raises ConnectionError when the node closed the socket."""
        deadline = time.monotonic() + timeout
        while not self._pending:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the node")
            self._pending += self.framer.feed(data)
        return self._pending.pop(0)

    def disconnect_reason(self, timeout: float = 10.0) -> int:
        """Read until the node's DISCONNECT; its reason code (the socket must close after)."""
        while True:
            pkt = self.read(timeout)
            if pkt.type == codec.DISCONNECT:
                return pkt.body[0] if pkt.body else 0

    def close(self) -> None:
        self.sock.close()
