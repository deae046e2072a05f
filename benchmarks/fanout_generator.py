"""The ``fanout_1000`` generator processes: subscribers on one topic, and one publisher.

``subscribers`` connections subscribe to one topic, spread over ``sub_procs`` processes that
multiplex them with ``selectors``; one publisher process sends ``messages`` PUBLISH packets,
keeping at most ``window`` messages' worth of deliveries outstanding (sent x subscribers -
delivered, read from a shared counter every subscriber process updates), so the broker is
saturated but never overrun. The payload carries the send timestamp (CLOCK_MONOTONIC, shared by
every process of the host), so each delivery has a latency. Everything is bounded: a deadline
on every wait, a stall timeout, and a stop event the parent sets.
"""

from __future__ import annotations

import array
import selectors
import socket
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

from benchmarks import codec
from benchmarks.connections import RECV_SIZE, close_all, connect_many, raise_nofile

_PUBACK_BYTE = codec.PUBACK << 4


def fanout_room(
    sent: int, delivered: int, subscribers: int, window: int, total: int, batch: int
) -> int:
    """How many messages the fan-out publisher may send now.

    At most ``window`` messages' worth of deliveries may be outstanding
    (``sent * subscribers - delivered``), never more than ``total - sent`` and ``batch``.
    """
    outstanding = sent * subscribers - delivered
    free_msgs = (window * subscribers - outstanding) // subscribers if subscribers else window
    return max(0, min(free_msgs, total - sent, batch))


@dataclass(frozen=True)
class FanoutParams:
    """What the fan-out processes do (one publisher, ``sub_procs`` subscriber processes)."""

    host: str
    port: int
    topic: str
    qos: int
    subscribers: int
    sub_procs: int
    messages: int
    warmup: int
    window: int  # messages whose deliveries may be outstanding
    batch: int
    payload_size: int
    deadline_s: float
    client_prefix: str
    stall_s: float = 5.0


@dataclass
class SubscriberResult:
    """What one subscriber process measured."""

    index: int
    sockets: int
    delivered: int = 0  # measured deliveries (seq >= warm-up)
    warmup_delivered: int = 0
    t_last_ns: int = 0
    latencies_ns: bytes = b""


@dataclass
class PublisherResult:
    """What the fan-out publisher measured (monotonic ns)."""

    sent: int = 0
    acks: int = 0
    t_start_ns: int = 0
    t_end_ns: int = 0
    stalled: bool = False
    timed_out: bool = False


def fanout_subscriber_main(
    p: FanoutParams,
    index: int,
    count: int,
    counters: Any,
    results: Queue[Any],
    stop: Event,
) -> None:
    """Hold ``count`` subscriber connections; count deliveries in ``counters[index]``."""
    socks: list[socket.socket] = []
    try:
        raise_nofile()
        ids = [f"{p.client_prefix}-fan-{index}-{i}" for i in range(count)]
        socks = connect_many(p.host, p.port, ids, 3600, subscribe=(p.topic, p.qos))
        results.put(("ready", index, ""))
        res = SubscriberResult(index, count)
        lat = array.array("q")
        sel = selectors.DefaultSelector()
        inbufs: dict[socket.socket, bytearray] = {}
        outbufs: dict[socket.socket, bytearray] = {}
        for s in socks:
            inbufs[s] = bytearray()
            sel.register(s, selectors.EVENT_READ)
        target = count * p.messages
        total = 0
        warm = p.warmup
        monotonic_ns = time.monotonic_ns
        hard_deadline = time.monotonic() + p.deadline_s + 60.0
        while res.delivered < target and time.monotonic() < hard_deadline:
            if stop.is_set():
                break
            events = sel.select(0.05)
            now = monotonic_ns()
            for key, mask in events:
                fobj = key.fileobj
                assert isinstance(fobj, socket.socket)
                s = fobj
                if mask & selectors.EVENT_WRITE:
                    out = outbufs[s]
                    try:
                        n = s.send(out)
                    except BlockingIOError:
                        n = 0
                    del out[:n]
                    if not out:
                        sel.modify(s, selectors.EVENT_READ)
                if not mask & selectors.EVENT_READ:
                    continue
                try:
                    chunk = s.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise ConnectionError("broker closed a subscriber connection")
                inbuf = inbufs[s]
                inbuf += chunk
                packets, used = codec.split_packets(inbuf)
                acks = bytearray()
                for first, start, _end in packets:
                    if first >> 4 != codec.PUBLISH:
                        continue
                    qos = (first >> 1) & 3
                    ts, seq = codec.payload_header(inbuf, start, qos)
                    total += 1
                    if seq >= warm:
                        res.delivered += 1
                        lat.append(now - ts)
                    else:
                        res.warmup_delivered += 1
                    if qos:
                        tlen = (inbuf[start] << 8) | inbuf[start + 1]
                        pos = start + 2 + tlen
                        acks += b"\x40\x02" + inbuf[pos : pos + 2]
                del inbuf[:used]
                if acks:
                    pending = outbufs.get(s)
                    if pending:
                        pending += acks
                        continue
                    try:
                        n = s.send(acks)
                    except BlockingIOError:
                        n = 0
                    if n < len(acks):
                        outbufs[s] = acks[n:]
                        sel.modify(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
            if events:
                res.t_last_ns = now
                counters[index] = total
        sel.close()
        res.latencies_ns = lat.tobytes()
        results.put(("result", index, res))
    except Exception as exc:  # reported to the parent, which aborts the run
        results.put(("error", index, f"{type(exc).__name__}: {exc}"))
    finally:
        close_all(socks)


def fanout_publisher_main(
    p: FanoutParams,
    counters: Any,
    results: Queue[Any],
    warm: Event,
    start: Event,
) -> None:
    """Publish warm-up then measured messages on ``p.topic``, bounded by delivered deliveries."""
    index = -1
    socks: list[socket.socket] = []
    try:
        socks = connect_many(p.host, p.port, [f"{p.client_prefix}-fanpub"], 3600)
        sock = socks[0]
        results.put(("ready", index, ""))
        if not warm.wait(60.0):
            raise TimeoutError("never told to warm up")
        pub = _FanoutPublisher(p, sock, counters)
        w = pub.run(p.warmup, 0, time.monotonic() + 30.0)
        if w.sent < p.warmup or w.stalled or w.timed_out:
            raise RuntimeError(
                f"warm-up incomplete: {pub.delivered()}/{p.warmup * p.subscribers} deliveries"
            )
        results.put(("warm", index, ""))
        if not start.wait(60.0):
            raise TimeoutError("never told to start")
        res = pub.run(p.messages, p.warmup, time.monotonic() + p.deadline_s)
        results.put(("result", index, res))
    except Exception as exc:
        results.put(("error", index, f"{type(exc).__name__}: {exc}"))
    finally:
        close_all(socks)


class _FanoutPublisher:
    def __init__(self, p: FanoutParams, sock: socket.socket, counters: Any) -> None:
        self.p = p
        self.sock = sock
        self.counters = counters
        self.tpl = codec.publish_template(p.topic, p.qos, p.payload_size)
        self.packet_id = 1
        self.inbuf = bytearray()
        self.out = bytearray()
        self.acks = 0

    def delivered(self) -> int:
        return int(sum(self.counters[:]))

    def run(self, count: int, first_seq: int, deadline: float) -> PublisherResult:
        """Send ``count`` messages (sequence numbers from ``first_seq``); wait for all deliveries.

        Deliveries are counted from the start of the warm-up, so the window is on the total.
        """
        p = self.p
        res = PublisherResult()
        subs = p.subscribers
        base_sent = first_seq  # messages sent before this phase (the warm-up)
        base_acks = self.acks
        sent = 0
        res.t_start_ns = last_progress = time.monotonic_ns()
        last_seen = (-1, -1)
        stall_ns = int(p.stall_s * 1e9)
        deadline_ns = int(deadline * 1e9)
        seq = first_seq
        while True:
            delivered = self.delivered()
            acked = self.acks - base_acks
            if delivered >= (base_sent + count) * subs and (p.qos == 0 or acked >= count):
                break
            now = time.monotonic_ns()
            if (delivered, acked) != last_seen:
                last_seen = (delivered, acked)
                last_progress = now
            elif now - last_progress > stall_ns:
                res.stalled = True
                break
            if now > deadline_ns:
                res.timed_out = True
                break
            room = fanout_room(
                base_sent + sent, delivered, subs, p.window, base_sent + count, p.batch
            )
            if room > 0 and not self.out:
                buf = bytearray(self.tpl.packet * room)
                codec.fill_batch(self.tpl, buf, room, now, seq, self.packet_id)
                self.packet_id = codec.next_packet_id(self.packet_id, room)
                seq += room
                sent += room
                self.out = buf
            if self.out:
                try:
                    n = self.sock.send(self.out)
                except BlockingIOError:
                    n = 0
                del self.out[:n]
            self._read(0.001)
        res.t_end_ns = time.monotonic_ns()
        res.sent = sent
        res.acks = self.acks - base_acks
        return res

    def _read(self, timeout: float) -> None:
        sel_r, _, _ = _select([self.sock], timeout)
        if not sel_r:
            return
        try:
            chunk = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        if not chunk:
            raise ConnectionError("broker closed the publisher connection")
        self.inbuf += chunk
        packets, used = codec.split_packets(self.inbuf)
        self.acks += sum(1 for first, _s, _e in packets if first == _PUBACK_BYTE)
        del self.inbuf[:used]


def _select(socks: list[socket.socket], timeout: float) -> tuple[list[Any], list[Any], list[Any]]:
    import select

    return select.select(socks, [], [], timeout)
