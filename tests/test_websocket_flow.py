"""Flow control of the MQTT-over-WebSocket transport: a client that does not read makes the
transport call ``pause_writing`` (so the node stops queueing for it), and reading again
``resume_writing``. A real websockets server and a raw TCP client that speaks the opening
handshake and then leaves its socket unread."""

from __future__ import annotations

import asyncio
import base64
import os
import socket

from websockets.asyncio.server import ServerConnection, serve

from ingress.wire.websocket import WebSocketTransport


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.events: list[str] = []
        self.transport: WebSocketTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, WebSocketTransport)
        self.transport = transport
        transport.set_write_buffer_limits(high=256 * 1024)

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")


async def test_a_client_that_does_not_read_pauses_writing_then_resumes() -> None:
    proto = Recorder()
    made = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        made.set()
        await WebSocketTransport(ws, proto).run()

    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(sock, (
            f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode())  # fmt: skip
        await asyncio.wait_for(made.wait(), 10)
        head = await loop.sock_recv(sock, 4096)
        assert b"101" in head
        assert proto.transport is not None
        # Write far more than the socket buffers hold while the client reads nothing.
        for _ in range(200):
            proto.transport.write(b"x" * 16384)
            await asyncio.sleep(0)
            if "pause" in proto.events:
                break
        assert proto.events == ["pause"]
        # The client reads everything: the transport drains and says so.
        async with asyncio.timeout(30):
            while "resume" not in proto.events:
                await loop.sock_recv(sock, 1 << 20)
        assert proto.events == ["pause", "resume"]
        sock.close()
