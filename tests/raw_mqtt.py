"""MQTT 3.1.1 packets built byte by byte, and a blocking raw-socket client for tests.

The tests that check exact return codes (CONNACK 4 or 5, SUBACK 0x80) speak MQTT over a plain
socket, so no client library can hide or retry what the broker answered.
"""

from __future__ import annotations

import socket

from ingress.wire import codec


def _s(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def connect_packet(
    client_id: str,
    *,
    username: str | None = None,
    password: bytes | None = None,
    will: tuple[str, bytes, int] | None = None,
    clean: bool = True,
    keep_alive: int = 30,
) -> bytes:
    """CONNECT with optional credentials and will (topic, payload, qos)."""
    flags = 0x02 if clean else 0x00
    payload = _s(client_id.encode())
    if will is not None:
        flags |= 0x04 | (will[2] << 3)
        payload += _s(will[0].encode()) + _s(will[1])
    if username is not None:
        flags |= 0x80
        payload += _s(username.encode())
    if password is not None:
        flags |= 0x40
        payload += _s(password)
    var = _s(b"MQTT") + bytes((4, flags)) + keep_alive.to_bytes(2, "big")
    body = var + payload
    return b"\x10" + codec.encode_remaining_length(len(body)) + body


def subscribe_packet(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    """SUBSCRIBE of ``filters`` (filter, qos)."""
    body = packet_id.to_bytes(2, "big")
    for filt, qos in filters:
        body += _s(filt.encode()) + bytes((qos,))
    return b"\x82" + codec.encode_remaining_length(len(body)) + body


class RawClient:
    """One MQTT connection over a plain socket; reads whole packets with a timeout."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.framer = codec.Framer(256 * 1024 * 1024)
        self.pending: list[codec.Packet] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> codec.Packet | None:
        """The next packet, or None once the broker closed the connection."""
        while not self.pending:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.pending.extend(self.framer.feed(data))
        return self.pending.pop(0)

    def connect(self, client_id: str, **kw: object) -> int | None:
        """Send CONNECT; CONNACK's return code, or None if the broker closed without one."""
        self.send(connect_packet(client_id, **kw))  # type: ignore[arg-type]
        pkt = self.read()
        if pkt is None:
            return None
        assert pkt.type == codec.CONNACK, pkt
        return pkt.body[1]

    def closed(self) -> bool:
        """True once the broker has closed the connection (reads until then)."""
        while True:
            if self.read() is None:
                return True

    def close(self) -> None:
        self.sock.close()
