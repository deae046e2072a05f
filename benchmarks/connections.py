"""Many raw-socket MQTT connections from one generator process: CONNECT (and SUBSCRIBE) them in
batches, close them, and raise the process's open-file limit to hold them; or one short-lived
connection at a time, timed from CONNECT to CONNACK.

Used by the generator processes of ``fanout_1000``, ``idle_memory``, the session scenarios,
``connect_auth`` and ``e2e_latency``; never in a broker's process.
"""

from __future__ import annotations

import resource
import socket
import time

from benchmarks import codec

RECV_SIZE = 1 << 16


def raise_nofile(wanted: int | None = None) -> int:
    """Raise this process's soft RLIMIT_NOFILE (to the hard limit, or ``wanted``); the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = (
        hard if wanted is None or (hard != resource.RLIM_INFINITY and wanted > hard) else wanted
    )
    if target == resource.RLIM_INFINITY:
        target = 1 << 20
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def _read_packet(sock: socket.socket, buf: bytearray, deadline: float) -> tuple[int, bytes]:
    """Blocking read of the next whole packet of ``sock`` (``buf`` keeps what follows)."""
    while True:
        packets, _used = codec.split_packets(buf)
        if packets:
            first, start, end = packets[0]
            body = bytes(buf[start:end])
            del buf[:end]
            return first, body
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer from the broker in time")
        sock.settimeout(left)
        chunk = sock.recv(RECV_SIZE)
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk


def connect_many(
    host: str,
    port: int,
    client_ids: list[str],
    keepalive: int,
    subscribe: tuple[str, int] | None = None,
    batch: int = 25,
    timeout: float = 30.0,
    clean_session: bool = True,
    own_topics: list[str] | None = None,
) -> list[socket.socket]:
    """Connect ``client_ids``, ``batch`` handshakes at a time; optionally subscribe.

    ``subscribe`` is one (filter, QoS) for every client; ``own_topics`` one QoS 1 filter per
    client instead (the same order as ``client_ids``). Returns the connected sockets,
    non-blocking. Raises on any refusal or timeout.
    """
    if own_topics is not None and len(own_topics) != len(client_ids):
        raise ValueError("own_topics must have one filter per client id")
    socks: list[socket.socket] = []
    try:
        for i in range(0, len(client_ids), batch):
            group = client_ids[i : i + batch]
            deadline = time.monotonic() + timeout
            new: list[socket.socket] = []
            for cid in group:
                s = socket.create_connection((host, port), timeout=timeout)
                socks.append(s)
                new.append(s)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.sendall(codec.encode_connect(cid, keepalive, clean_session))
            bufs = [bytearray() for _ in new]
            for s, buf in zip(new, bufs, strict=True):
                first, body = _read_packet(s, buf, deadline)
                if first >> 4 != codec.CONNACK or body[1] != 0:
                    raise ConnectionError(f"CONNACK refused: type {first >> 4}, body {body!r}")
            if subscribe is not None or own_topics is not None:
                for j, s in enumerate(new):
                    if own_topics is not None:
                        s.sendall(codec.encode_subscribe(1, own_topics[i + j], 1))
                    else:
                        assert subscribe is not None
                        s.sendall(codec.encode_subscribe(1, subscribe[0], subscribe[1]))
                for s, buf in zip(new, bufs, strict=True):
                    first, body = _read_packet(s, buf, deadline)
                    if first >> 4 != codec.SUBACK or body[-1] == 0x80:
                        raise ConnectionError(f"SUBACK refused: type {first >> 4}, body {body!r}")
            for s in new:
                s.setblocking(False)
    except BaseException:
        close_all(socks, polite=False)
        raise
    return socks


def close_all(socks: list[socket.socket], polite: bool = True) -> None:
    """Send DISCONNECT (when ``polite``) and close every socket."""
    bye = codec.encode_disconnect()
    for s in socks:
        if polite:
            try:
                s.send(bye)
            except OSError:
                pass
        s.close()


def connect_once(
    host: str,
    port: int,
    client_id: str,
    username: str | None = None,
    password: bytes | None = None,
    timeout: float = 30.0,
) -> tuple[int, int]:
    """One clean-session CONNECT and its CONNACK: ``(return code, ns from CONNECT to CONNACK)``.

    An accepted connection is closed after a DISCONNECT, a refused one as it is (the broker
    closes it). Raises when the broker answers anything but a CONNACK, or not in time.
    """
    packet = codec.encode_connect(client_id, 60, True, username, password)
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deadline = time.monotonic() + timeout
        # From the CONNECT's write: the TCP handshake is the kernel's (the listen backlog
        # completes it), the broker's share starts when it reads the CONNECT.
        t0 = time.monotonic_ns()
        s.sendall(packet)
        first, body = _read_packet(s, bytearray(), deadline)
        took = time.monotonic_ns() - t0
        if first >> 4 != codec.CONNACK or len(body) != 2:
            raise ConnectionError(f"expected CONNACK, got type {first >> 4}, body {body!r}")
        if body[1] == 0:
            s.sendall(codec.encode_disconnect())
        return body[1], took
    finally:
        s.close()
