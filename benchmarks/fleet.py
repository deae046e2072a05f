"""Many-connection scenarios: fan-out to 1,000 subscribers, and memory per idle connection.

The connections live in generator processes (several, each multiplexing hundreds or thousands of
sockets with ``selectors``), never in a broker's process. Everything is bounded: connection
counts, a deadline on every wait, and a stop event the parent sets.

``fanout_1000``: ``subscribers`` connections subscribe to one topic; one publisher process sends
``messages`` PUBLISH packets, keeping at most ``window`` messages' worth of deliveries outstanding
(sent x subscribers - delivered, read from a shared counter every subscriber process updates),
so the broker is saturated but never overrun. The payload carries the send timestamp
(CLOCK_MONOTONIC, shared by every process of the host), so each delivery has a latency.

``idle_memory``: ``connections`` clients CONNECT (clean session, a large keep-alive) and then
send nothing; the parent reads the broker's VmRSS before, while connected, and after they
disconnect.
"""

from __future__ import annotations

import array
import errno
import resource
import selectors
import socket
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

from benchmarks import codec

RECV_SIZE = 1 << 16
_PUBACK_BYTE = codec.PUBACK << 4


# Pure helpers ---------------------------------------------------------------------------------


def shares(total: int, parts: int) -> list[int]:
    """Split ``total`` into ``parts`` near-equal non-negative counts (the first ones larger)."""
    if parts <= 0:
        raise ValueError("parts must be positive")
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def parse_vmrss_kib(status_text: str) -> int:
    """VmRSS in KiB from the text of ``/proc/<pid>/status``."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            fields = line.split()
            if len(fields) >= 3 and fields[2] != "kB":
                raise ValueError(f"unexpected VmRSS unit: {line!r}")
            return int(fields[1])
    raise ValueError("no VmRSS line (a kernel thread, or the process exited)")


def parse_nofile_limits(limits_text: str) -> tuple[int | None, int | None]:
    """(soft, hard) 'Max open files' from the text of ``/proc/<pid>/limits``; None = unlimited."""
    for line in limits_text.splitlines():
        if line.startswith("Max open files"):
            fields = line[len("Max open files") :].split()

            def val(s: str) -> int | None:
                return None if s == "unlimited" else int(s)

            return val(fields[0]), val(fields[1])
    raise ValueError("no 'Max open files' line")


def kib_per_connection(rss_before_kib: int, rss_after_kib: int, connections: int) -> float | None:
    """RSS growth per connection in KiB; None when there were no connections."""
    if connections <= 0:
        return None
    return (rss_after_kib - rss_before_kib) / connections


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


# Connections --------------------------------------------------------------------------------


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
) -> list[socket.socket]:
    """Connect ``client_ids`` (clean session), ``batch`` handshakes at a time; optionally subscribe.

    Returns the connected sockets, non-blocking. Raises on any refusal or timeout.
    """
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
                s.sendall(codec.encode_connect(cid, keepalive=keepalive))
            bufs = [bytearray() for _ in new]
            for s, buf in zip(new, bufs, strict=True):
                first, body = _read_packet(s, buf, deadline)
                if first >> 4 != codec.CONNACK or body[1] != 0:
                    raise ConnectionError(f"CONNACK refused: type {first >> 4}, body {body!r}")
            if subscribe is not None:
                topic, qos = subscribe
                packet = codec.encode_subscribe(1, topic, qos)
                for s in new:
                    s.sendall(packet)
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


# Fan-out ------------------------------------------------------------------------------------


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


# Idle connections ---------------------------------------------------------------------------


def idle_worker_main(
    host: str,
    port: int,
    index: int,
    count: int,
    keepalive: int,
    client_prefix: str,
    results: Queue[Any],
    disconnect: Event,
) -> None:
    """Connect ``count`` idle clients, report, hold them until ``disconnect``, then close them."""
    socks: list[socket.socket] = []
    try:
        limit = raise_nofile(count + 64)
        if limit < count + 16:
            raise OSError(errno.EMFILE, f"RLIMIT_NOFILE is {limit}, need {count + 16}")
        ids = [f"{client_prefix}-idle-{index}-{i}" for i in range(count)]
        t0 = time.monotonic()
        socks = connect_many(host, port, ids, keepalive)
        results.put(("connected", index, (len(socks), time.monotonic() - t0)))
        if not disconnect.wait(300.0):
            raise TimeoutError("never told to disconnect")
        # A broker that closed an idle client would show here as a readable socket.
        sel = selectors.DefaultSelector()
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        dropped = len(sel.select(0))
        sel.close()
        close_all(socks)
        socks = []
        results.put(("closed", index, dropped))
    except Exception as exc:
        results.put(("error", index, f"{type(exc).__name__}: {exc}"))
    finally:
        close_all(socks, polite=False)
