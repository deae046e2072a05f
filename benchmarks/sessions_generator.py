"""The generator processes of the persistent-session scenarios (``reconnect_1000``,
``offline_sessions``): create sessions, publish to them while they are offline, reconnect them.

Each device has a persistent session (clean session = 0) subscribed at QoS 1 to its own
command topic; messages are numbered in the payload header, so what each reconnected session
received can be tallied (complete, missing, duplicates).
"""

from __future__ import annotations

import errno
import os
import select
import selectors
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

from benchmarks import codec
from benchmarks.connections import RECV_SIZE, close_all, connect_many, raise_nofile

_PUBACK_BYTE = codec.PUBACK << 4


def device_ids(prefix: str, n: int) -> list[str]:
    """Client ids of ``n`` devices (also the middle level of their command topics)."""
    return [f"{prefix}-d{i}" for i in range(n)]


def device_topic(client_id: str) -> str:
    """The topic a device subscribes to for its commands."""
    return f"devices/{client_id}/commands"


def tally_sessions(received: list[list[int]], expected: int) -> dict[str, int]:
    """Sum up what reconnected sessions received (message numbers 0..expected-1 each).

    ``complete``: sessions that got every number; ``missing``: numbers never received;
    ``duplicates``: deliveries of a number already received; ``unexpected``: numbers outside
    0..expected-1 (another session's or an older run's message).
    """
    complete = missing = duplicates = unexpected = 0
    for got in received:
        seen: set[int] = set()
        for n in got:
            if not 0 <= n < expected:
                unexpected += 1
            elif n in seen:
                duplicates += 1
            else:
                seen.add(n)
        missing += expected - len(seen)
        complete += len(seen) == expected
    return {
        "sessions": len(received),
        "complete": complete,
        "missing": missing,
        "duplicates": duplicates,
        "unexpected": unexpected,
    }


def create_sessions_main(
    host: str, port: int, index: int, ids: list[str], results: Queue[Any]
) -> None:
    """Give each of ``ids`` a persistent session subscribed to its own topic, then DISCONNECT."""
    socks: list[socket.socket] = []
    try:
        raise_nofile(len(ids) + 64)
        t0 = time.monotonic()
        socks = connect_many(
            host,
            port,
            ids,
            3600,
            clean_session=False,
            own_topics=[device_topic(c) for c in ids],
        )
        close_all(socks)
        socks = []
        results.put(("created", index, (len(ids), time.monotonic() - t0)))
    except Exception as exc:
        results.put(("error", index, f"{type(exc).__name__}: {exc}"))
    finally:
        close_all(socks, polite=False)


def publish_each_main(
    host: str,
    port: int,
    index: int,
    topics: list[str],
    per_topic: int,
    payload_size: int,
    window: int,
    deadline_s: float,
    results: Queue[Any],
    first_number: int = 0,
) -> None:
    """Publish ``per_topic`` QoS 1 messages to each topic; report once every one is PUBACKed.

    The payload header carries the message's number (``first_number`` onwards, per topic) as
    its sequence number.
    """
    socks: list[socket.socket] = []
    try:
        socks = connect_many(host, port, [f"{topics[0]}-pub-{index}".replace("/", "_")], 3600)
        sock = socks[0]
        pad = b"x" * (payload_size - codec.PAYLOAD_HEADER.size)
        todo = [(t, first_number + k) for k in range(per_topic) for t in topics]
        inbuf = bytearray()
        sent = acks = 0
        pid = 1
        t0 = time.monotonic()
        deadline = t0 + deadline_s
        while acks < len(todo):
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {acks}/{len(todo)} PUBACKs in {deadline_s}s")
            room = min(window - (sent - acks), len(todo) - sent)
            if room > 0:
                out = bytearray()
                now = time.monotonic_ns()
                for topic, k in todo[sent : sent + room]:
                    payload = codec.PAYLOAD_HEADER.pack(now, k) + pad
                    out += codec.encode_publish(topic, payload, qos=1, packet_id=pid)
                    pid = codec.next_packet_id(pid, 1)
                sock.setblocking(True)
                sock.sendall(out)
                sock.setblocking(False)
                sent += room
            r, _, _ = select.select([sock], [], [], 0.05)
            if not r:
                continue
            try:
                chunk = sock.recv(RECV_SIZE)
            except BlockingIOError:
                continue
            if not chunk:
                raise ConnectionError("broker closed the publisher connection")
            inbuf += chunk
            packets, used = codec.split_packets(inbuf)
            acks += sum(1 for first, _s, _e in packets if first == _PUBACK_BYTE)
            del inbuf[:used]
        results.put(("published", index, (acks, time.monotonic() - t0)))
    except Exception as exc:
        results.put(("error", index, f"{type(exc).__name__}: {exc}"))
    finally:
        close_all(socks)


@dataclass
class ReconnectResult:
    """What one reconnecting process saw (monotonic ns)."""

    index: int
    sessions: int
    session_present: int = 0  # CONNACKs with the session-present flag
    received: list[list[int]] = field(default_factory=list)  # message numbers, per session
    t_start_ns: int = 0
    t_all_connected_ns: int = 0
    t_done_ns: int = 0  # last session complete (0 when some never completed)
    done_ns: list[int] = field(default_factory=list)  # per complete session: time from start
    timed_out: bool = False


def reconnect_main(
    host: str,
    port: int,
    index: int,
    ids: list[str],
    expected: int,
    deadline_s: float,
    grace_s: float,
    results: Queue[Any],
    start: Event,
) -> None:
    """On ``start``, reconnect every one of ``ids`` at once (clean session = 0, non-blocking).

    PUBACKs every QoS 1 delivery at once and counts the message numbers per session until each
    has ``expected`` distinct ones (or the deadline); then reads ``grace_s`` longer for
    duplicates, and DISCONNECTs.
    """
    socks: list[socket.socket] = []
    try:
        raise_nofile(len(ids) + 64)
        results.put(("ready", index, ""))
        if not start.wait(120.0):
            raise TimeoutError("never told to start")
        res = ReconnectResult(index, len(ids), received=[[] for _ in ids])
        res.t_start_ns = t0 = time.monotonic_ns()
        sel = selectors.DefaultSelector()
        state: dict[socket.socket, list[Any]] = {}  # [i, inbuf, outbuf, connected, seen]
        for i, cid in enumerate(ids):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            socks.append(s)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = s.connect_ex((host, port))
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, f"connect {cid}: {os.strerror(err)}")
            state[s] = [
                i,
                bytearray(),
                bytearray(codec.encode_connect(cid, 3600, False)),
                False,
                set(),
            ]
            sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
        connacks = complete = 0
        n = len(ids)
        deadline = time.monotonic() + deadline_s
        quiet_until = None
        while time.monotonic() < deadline:
            if quiet_until is None and complete == n and connacks == n:
                res.t_done_ns = max(res.done_ns) + t0 if res.done_ns else time.monotonic_ns()
                quiet_until = time.monotonic() + grace_s
            if quiet_until is not None and time.monotonic() > quiet_until:
                break
            for key, mask in sel.select(0.05):
                fobj = key.fileobj
                assert isinstance(fobj, socket.socket)
                s = fobj
                st = state[s]
                if mask & selectors.EVENT_WRITE and st[2]:
                    try:
                        sent = s.send(st[2])
                    except (BlockingIOError, InterruptedError):
                        sent = 0
                    del st[2][:sent]
                    if not st[2]:
                        sel.modify(s, selectors.EVENT_READ)
                if not mask & selectors.EVENT_READ:
                    continue
                try:
                    chunk = s.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise ConnectionError(f"broker closed {ids[st[0]]}")
                inbuf = st[1]
                inbuf += chunk
                packets, used = codec.split_packets(inbuf)
                out = bytearray()
                now = time.monotonic_ns()
                for first, b0, b1 in packets:
                    kind = first >> 4
                    if kind == codec.CONNACK:
                        if inbuf[b0 + 1] != 0:
                            raise ConnectionError(f"CONNACK refused {ids[st[0]]}: {inbuf[b0 + 1]}")
                        connacks += 1
                        res.session_present += inbuf[b0] & 1
                        st[3] = True
                        if connacks == n:
                            res.t_all_connected_ns = now
                    elif kind == codec.PUBLISH:
                        pub = codec.parse_publish(first & 0x0F, bytes(inbuf[b0:b1]))
                        if pub.qos:
                            out += codec.encode_ack(codec.ack_reply(first) or 0, pub.packet_id)
                        _ts, k = codec.PAYLOAD_HEADER.unpack_from(pub.payload)
                        res.received[st[0]].append(int(k))
                        seen = st[4]
                        if 0 <= k < expected and k not in seen:
                            seen.add(k)
                            if len(seen) == expected:
                                complete += 1
                                res.done_ns.append(now - t0)
                    elif kind == codec.PUBREL:
                        out += codec.encode_ack(codec.PUBCOMP, (inbuf[b0] << 8) | inbuf[b0 + 1])
                del inbuf[:used]
                if out:
                    if st[2]:
                        st[2] += out
                    else:
                        try:
                            sent = s.send(out)
                        except BlockingIOError:
                            sent = 0
                        if sent < len(out):
                            st[2] += out[sent:]
                            sel.modify(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
        else:
            res.timed_out = True
        sel.close()
        close_all(socks)
        socks = []
        results.put(("result", index, res))
    except Exception as exc:
        results.put(("error", index, f"{type(exc).__name__}: {exc}"))
    finally:
        close_all(socks, polite=False)
