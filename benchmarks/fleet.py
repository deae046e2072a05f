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
import os
import resource
import selectors
import socket
import time
from dataclasses import dataclass, field
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


# Persistent sessions ------------------------------------------------------------------------


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
            r, _, _ = _select([sock], 0.05)
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
