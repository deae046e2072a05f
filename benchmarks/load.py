"""The load generator: one process per publisher, raw sockets, pre-encoded PUBLISH packets.

Each worker process owns one publisher connection and, for publisher -> subscriber scenarios,
one subscriber connection on the same topic. It keeps at most ``window`` messages outstanding
(sent but not yet delivered to its subscriber, or not yet PUBACKed -- PUBCOMPed at QoS 2 -- when
there is no subscriber),
so the broker never queues without bound and the latency figures mean something.
Everything is bounded: a message count, a deadline, and a stall timeout.
"""

from __future__ import annotations

import array
import select
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

from benchmarks import codec

RECV_SIZE = 1 << 18
# First bytes the generator branches on.
_PUBACK_BYTE = codec.PUBACK << 4
_PUBREC_BYTE = codec.PUBREC << 4
_PUBREL_BYTE = (codec.PUBREL << 4) | 0x02
_PUBCOMP_BYTE = codec.PUBCOMP << 4


@dataclass(frozen=True)
class WorkerParams:
    """What one generator process does."""

    index: int
    host: str
    port: int
    topic: str
    qos: int
    with_subscriber: bool
    messages: int
    window: int
    batch: int
    payload_size: int
    deadline_s: float
    warmup: int
    rate: float = 0.0  # messages/s for this worker; 0 = as fast as the window allows
    stall_s: float = 5.0
    client_prefix: str = "bench"
    protocol: int = codec.MQTT311  # MQTT protocol level of both connections: 4 (3.1.1) or 5
    # A share name: the subscriber joins $share/{share}/{topic} instead of the topic.
    share: str = ""


@dataclass
class WorkerResult:
    """What one generator process measured (monotonic ns timestamps)."""

    index: int
    sent: int = 0
    completed: int = 0
    acks: int = 0
    delivered: int = 0
    t_start_ns: int = 0
    t_end_ns: int = 0
    stalled: bool = False
    timed_out: bool = False
    latencies_ns: bytes = b""  # array('q') of per-message latencies, as bytes
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class BufferedSocket:
    """A socket with an input buffer and pending output, for a select loop."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.out = bytearray()

    def flush(self) -> None:
        """Send as much pending output as the socket takes now."""
        if self.out:
            try:
                n = self.sock.send(self.out)
            except BlockingIOError:
                return
            del self.out[:n]

    def receive(self, size: int) -> bool:
        """Append what the socket has (up to ``size`` bytes) to ``inbuf``; False if it had
        nothing yet. ConnectionError if the broker closed the connection."""
        try:
            chunk = self.sock.recv(size)
        except BlockingIOError:
            return False
        if not chunk:
            raise ConnectionError("broker closed the connection")
        self.inbuf += chunk
        return True


class MqttConn(BufferedSocket):
    """An MQTT client connection: connected and CONNACKed (blocking), then non-blocking.

    ``protocol`` 5 connects with MQTT 5; its CONNACK carries properties, so only the reason
    code (byte 1, where 3.1.1 has its return code) is checked.
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        timeout: float = 10.0,
        protocol: int = codec.MQTT311,
    ) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        super().__init__(sock)
        self.sock.sendall(codec.encode_connect(client_id, keepalive=120, protocol=protocol))
        _first, body = self.expect(codec.CONNACK, timeout)
        if body[1:2] != b"\x00":  # return code (3.1.1) or reason code (5); 0 = accepted
            code = body[1] if len(body) > 1 else None
            raise ConnectionError(f"CONNACK refused {client_id!r}: return code {code}")
        self.sock.setblocking(False)

    def expect(self, packet_type: int, timeout: float) -> tuple[int, bytes]:
        """Blocking read of the next packet, which must be of ``packet_type``."""
        deadline = time.monotonic() + timeout
        while True:
            packets, _used = codec.split_packets(self.inbuf)
            if packets:
                first, start, end = packets[0]
                body = bytes(self.inbuf[start:end])
                del self.inbuf[:end]
                if first >> 4 != packet_type:
                    raise ConnectionError(f"expected packet type {packet_type}, got {first >> 4}")
                return first, body
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no packet of type {packet_type} within {timeout}s")
            self.sock.settimeout(left)
            chunk = self.sock.recv(RECV_SIZE)
            if not chunk:
                raise ConnectionError("broker closed the connection")
            self.inbuf += chunk

    def close(self) -> None:
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(1.0)
            self.sock.sendall(self.out + codec.encode_disconnect())
        except OSError:
            pass
        self.sock.close()


class _Pump:
    """The send/receive loop of one worker."""

    def __init__(self, p: WorkerParams) -> None:
        self.p = p
        # Chosen once per protocol, so the hot loop has no per-message protocol branch.
        self.tpl = codec.publish_template(p.topic, p.qos, p.payload_size, p.protocol)
        self.payload_header = codec.payload_header_for(p.protocol)
        self.sub: MqttConn | None = None
        if p.with_subscriber:
            self.sub = MqttConn(
                p.host, p.port, f"{p.client_prefix}-sub-{p.index}", protocol=p.protocol
            )
            self.sub.sock.setblocking(True)
            filt = f"$share/{p.share}/{p.topic}" if p.share else p.topic
            self.sub.sock.sendall(codec.encode_subscribe(1, filt, p.qos, p.protocol))
            _, body = self.sub.expect(codec.SUBACK, 10.0)
            codes = codec.suback_codes(body, p.protocol)
            if not codes or codes[0] >= 0x80:
                raise ConnectionError(f"SUBACK refused {p.topic!r}: {codes.hex()}")
            self.sub.sock.setblocking(False)
        self.pub = MqttConn(p.host, p.port, f"{p.client_prefix}-pub-{p.index}", protocol=p.protocol)
        self.packet_id = 1
        self.seq = 0
        self.send_ts = [0] * 65536  # by packet id, for publish -> PUBACK latency
        self.lat = array.array("q")

    def run(self, count: int, deadline: float, record: bool) -> WorkerResult:
        p = self.p
        res = WorkerResult(p.index)
        tpl = self.tpl
        acked = p.qos >= 1  # the publisher waits for PUBACK (QoS 1) or PUBCOMP (QoS 2)
        # The packet that completes a publish: PUBACK, or PUBCOMP after PUBREC/PUBREL.
        done_byte = _PUBCOMP_BYTE if p.qos == 2 else _PUBACK_BYTE
        has_sub = self.sub is not None
        pub, sub = self.pub, self.sub
        lat = self.lat
        send_ts = self.send_ts
        payload_header = self.payload_header
        monotonic_ns = time.monotonic_ns
        seq_base = self.seq
        sent = acks = delivered = 0
        t0 = monotonic_ns()
        res.t_start_ns = t0
        last_progress = t0
        stall_ns = int(p.stall_s * 1e9)
        deadline_ns = int(deadline * 1e9)
        rate_per_ns = p.rate / 1e9 if p.rate > 0 else 0.0
        read_socks = [pub.sock] + ([sub.sock] if sub else [])
        while True:
            if has_sub:
                done = min(acks, delivered) if acked else delivered
                completed = delivered
            else:
                done = completed = acks
            if completed >= count and done >= count:
                break
            now = monotonic_ns()
            if now > deadline_ns:
                res.timed_out = True
                break
            if now - last_progress > stall_ns:
                res.stalled = True
                break
            room = min(p.window - (sent - done), count - sent, p.batch)
            if rate_per_ns:
                room = min(room, int((now - t0) * rate_per_ns) + 1 - sent)
            if room > 0 and not pub.out:
                buf = bytearray(tpl.packet * room)
                codec.fill_batch(tpl, buf, room, now, self.seq, self.packet_id)
                if acked and not has_sub and record:
                    pid = self.packet_id
                    first = min(room, 65536 - pid)
                    send_ts[pid : pid + first] = [now] * first
                    if room > first:
                        send_ts[1 : 1 + room - first] = [now] * (room - first)
                self.packet_id = codec.next_packet_id(self.packet_id, room)
                self.seq += room
                sent += room
                pub.out = buf
                pub.flush()
                timeout = 0.0
            elif rate_per_ns and room <= 0 and sent - done < p.window:
                timeout = min(0.01, max(0.0, (sent + 1 - (now - t0) * rate_per_ns) / p.rate))
            else:
                timeout = 0.05
            rlist, wlist, _ = select.select(read_socks, [pub.sock] if pub.out else [], [], timeout)
            if wlist:
                pub.flush()
            for s in rlist:
                conn = pub if s is pub.sock else sub
                assert conn is not None
                if not conn.receive(RECV_SIZE):
                    continue
                now = monotonic_ns()
                inbuf = conn.inbuf
                packets, used = codec.split_packets(inbuf)
                if conn is pub:
                    rels = []
                    # Only the packet id is read: an MQTT 5 ack may go on with a reason code
                    # and properties.
                    for first, start, _end in packets:
                        if first == done_byte:
                            acks += 1
                            if record and not has_sub:
                                pid = (inbuf[start] << 8) | inbuf[start + 1]
                                lat.append(now - send_ts[pid])
                        elif first == _PUBREC_BYTE:
                            rels.append(b"\x62\x02" + inbuf[start : start + 2])
                    if rels:
                        pub.out += b"".join(rels)
                        pub.flush()
                else:
                    assert sub is not None
                    acks_out = []
                    for first, start, _end in packets:
                        if first == _PUBREL_BYTE:  # QoS 2, second half: PUBCOMP
                            acks_out.append(b"\x70\x02" + inbuf[start : start + 2])
                            continue
                        if first >> 4 != codec.PUBLISH:
                            continue
                        qos = (first >> 1) & 3
                        if qos:  # PUBACK (QoS 1) or PUBREC (QoS 2), even for a straggler
                            tlen = (inbuf[start] << 8) | inbuf[start + 1]
                            pos = start + 2 + tlen
                            acks_out.append(
                                (b"\x40\x02" if qos == 1 else b"\x50\x02") + inbuf[pos : pos + 2]
                            )
                        ts, seq = payload_header(inbuf, start, qos)
                        if seq < seq_base:
                            continue  # a straggler from the warm-up
                        delivered += 1
                        if record:
                            lat.append(now - ts)
                    if acks_out:
                        sub.out += b"".join(acks_out)
                        sub.flush()
                if packets:
                    last_progress = now
                del inbuf[:used]
            if sub is not None and sub.out:
                sub.flush()
        res.t_end_ns = monotonic_ns()
        res.sent = sent
        res.acks = acks
        res.delivered = delivered
        res.completed = delivered if has_sub else acks
        return res

    def drain(self, seconds: float) -> None:
        """Read and discard (answering QoS 1/2 flows) until quiet for ``seconds``."""
        conns = [c for c in (self.pub, self.sub) if c is not None]
        quiet_until = time.monotonic() + seconds
        while time.monotonic() < quiet_until:
            rlist, _, _ = select.select([c.sock for c in conns], [], [], 0.05)
            for c in conns:
                c.flush()
                if c.sock not in rlist or not c.receive(RECV_SIZE):
                    continue
                packets, used = codec.split_packets(c.inbuf)
                for first, start, end in packets:
                    reply = codec.ack_reply(first)
                    if reply is None:
                        continue
                    if first >> 4 == codec.PUBLISH:
                        body = bytes(c.inbuf[start:end])
                        pid = codec.parse_publish(first & 0x0F, body, self.p.protocol).packet_id
                    else:
                        pid = (c.inbuf[start] << 8) | c.inbuf[start + 1]
                    c.out += codec.encode_ack(reply, pid)
                del c.inbuf[:used]
                if packets:
                    quiet_until = time.monotonic() + seconds

    def close(self) -> None:
        self.pub.close()
        if self.sub is not None:
            self.sub.close()


def worker_main(p: WorkerParams, results: Queue[Any], start: Event) -> None:
    """Process entry: connect, warm up, report ready, wait for start, run, report."""
    pump: _Pump | None = None
    try:
        pump = _Pump(p)
        if p.warmup:
            w = pump.run(p.warmup, time.monotonic() + 20.0, record=False)
            pump.drain(0.3)
            if w.completed < p.warmup:
                raise RuntimeError(
                    f"warm-up incomplete: {w.completed}/{p.warmup} "
                    f"(stalled={w.stalled}, timed_out={w.timed_out})"
                )
        results.put(("ready", p.index, ""))
        if not start.wait(60.0):
            raise TimeoutError("never told to start")
        res = pump.run(p.messages, time.monotonic() + p.deadline_s, record=True)
        res.latencies_ns = pump.lat.tobytes()
        results.put(("result", p.index, res))
    except Exception as exc:  # reported to the parent, which aborts the run
        results.put(("error", p.index, f"{type(exc).__name__}: {exc}"))
    finally:
        if pump is not None:
            try:
                pump.close()
            except OSError:
                pass
