"""MQTT over WebSocket: one ``asyncio.Transport`` over a websockets connection.

The MQTT protocol object (``MQTTConnection``) is written for a byte stream. This adapter lets it
run unchanged over a WebSocket connection (MQTT 3.1.1 §6): each binary message received is fed
to ``data_received`` as it is (the framer does not assume packets align with messages,
[MQTT-6.0.0-2]), and writes go out as binary messages [MQTT-6.0.0-1]. Writes made in one pass of
the event loop leave as one message.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.frames import CloseCode

log = logging.getLogger(__name__)


class WebSocketTransport(asyncio.Transport):
    """The transport side of one MQTT-over-WebSocket connection."""

    def __init__(self, ws: ServerConnection, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._ws = ws
        self._protocol = protocol
        self._out: list[bytes] = []
        self._flusher: asyncio.Task[None] | None = None
        self._reading = asyncio.Event()
        self._reading.set()
        self._closing = False
        # Flow control as asyncio's own transports do it: above ``_high`` bytes not yet on the
        # wire the protocol is told to pause writing (it stops queueing for a client that does
        # not read, issue 9), at or below ``_low`` to resume.
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._writing_paused = False

    # asyncio.Transport ------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``; everything queued in one loop pass leaves as one binary message."""
        if self._closing or not data:
            return
        self._out.append(bytes(data))
        self._start_flusher()
        if not self._writing_paused and self.get_write_buffer_size() > self._high:
            self._writing_paused = True
            self._protocol.pause_writing()

    def close(self) -> None:
        """Send what is queued, then close the WebSocket (code 1000)."""
        if self._closing:
            return
        self._closing = True
        self._reading.set()  # a paused reader must see the close
        self._start_flusher()

    def abort(self) -> None:
        """Drop what is queued and close the TCP connection now."""
        self._closing = True
        self._out.clear()
        self._reading.set()
        self._ws.transport.abort()

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        """Stop taking messages; websockets then stops reading the socket once its queue fills."""
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    def is_reading(self) -> bool:
        return self._reading.is_set() and not self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """As the underlying TCP transport (``peername``, ``sockname``, ``socket``...)."""
        if name == "websocket":
            return self._ws
        return self._ws.transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        """Bytes queued here and in the TCP transport beneath (sent, not yet on the wire)."""
        return sum(map(len, self._out)) + self._ws.transport.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        self._high = high
        self._low = high // 4 if low is None else low

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def _maybe_resume_writing(self) -> None:
        if self._writing_paused and self.get_write_buffer_size() <= self._low:
            self._writing_paused = False
            self._protocol.resume_writing()

    # internals --------------------------------------------------------------------------

    def _start_flusher(self) -> None:
        # A task only while there is something to send: an idle connection holds none.
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        ws = self._ws
        try:
            while self._out:
                data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
                self._out.clear()
                await ws.send(data)  # bytes: a binary message; waits while the socket is full
                self._maybe_resume_writing()
            self._maybe_resume_writing()
            if self._closing:
                await ws.close()
        except ConnectionClosed:
            self._out.clear()

    async def _wait_reading(self) -> None:
        # Paused: wait to be resumed, but notice a connection the peer closed meanwhile.
        resumed = asyncio.ensure_future(self._reading.wait())
        closed = asyncio.ensure_future(self._ws.wait_closed())
        await asyncio.wait((resumed, closed), return_when=asyncio.FIRST_COMPLETED)
        resumed.cancel()
        closed.cancel()

    async def run(self) -> None:
        """Feed received messages to the protocol until the connection ends."""
        protocol, ws = self._protocol, self._ws
        protocol.connection_made(self)
        exc: Exception | None = None
        try:
            while True:
                if not self._reading.is_set():
                    await self._wait_reading()
                message = await ws.recv()
                if isinstance(message, str):
                    # [MQTT-6.0.0-1]: any other than a binary data frame closes the connection.
                    log.warning("WebSocket client %s sent a text frame; closing", self._peer())
                    self._closing = True
                    self._out.clear()
                    await ws.close(CloseCode.UNSUPPORTED_DATA, "MQTT needs binary frames")
                    break
                protocol.data_received(message)
        except ConnectionClosedOK:
            pass
        except ConnectionClosed as err:
            exc = err
        finally:
            self._closing = True
            if self._flusher is not None and not self._flusher.done():
                self._flusher.cancel()
            protocol.connection_lost(exc)

    def _peer(self) -> str:
        peer = self._ws.remote_address
        return f"{peer[0]}:{peer[1]}" if peer else "?"
