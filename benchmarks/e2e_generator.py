"""The ``e2e_latency`` generator: devices that get commands, a publisher paced by the clock.

One process (raw sockets, :mod:`benchmarks.codec`) holds the device connections, each
subscribed at QoS 1 to its own command topic, and one publisher connection that sends QoS 1
readings round-robin over the devices, message *i* due at ``t0 + i / rate``. A reading is
stamped with ``time.monotonic_ns()`` as it is written; its command echoes that stamp and the
worker's clock when the agent ran. The process reports on its queue (:mod:`benchmarks.procs`):
"ready", "measuring" (first measured send), "sent" (last send), then "result" (an
:class:`E2EResult`) or "error".
"""

from __future__ import annotations

import array
import json
import select
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

from benchmarks import codec
from benchmarks.connections import close_all, connect_many
from benchmarks.load import BufferedSocket, MqttConn
from benchmarks.sessions_generator import device_ids, device_topic

RECV_SIZE = 1 << 16


def reading_payload(seq: int, sent_ns: int, size: int = 100) -> bytes:
    """A JSON reading ``{"seq","sent_ns"}`` padded with a ``pad`` field to ``size`` bytes."""
    head = b'{"seq":%d,"sent_ns":%d' % (seq, sent_ns)
    fill = size - len(head) - len(b',"pad":""}')
    if fill < 0:
        return head + b"}"
    return head + b',"pad":"' + b"x" * fill + b'"}'


def due_count(elapsed_ns: int, rate: float, total: int) -> int:
    """How many messages are due ``elapsed_ns`` after the start at ``rate`` msg/s (message i is
    due at i / rate: the first at once), at most ``total``."""
    if elapsed_ns < 0:
        return 0
    return min(total, int(elapsed_ns * rate / 1e9) + 1)


def device_of_topic(topic: str) -> str:
    """The device level of ``devices/<device>/commands``."""
    parts = topic.split("/")
    return parts[1] if len(parts) == 3 else ""


@dataclass(frozen=True)
class E2EParams:
    """What the generator process does."""

    host: str
    port: int
    devices: int
    rate: float  # msg/s in all
    warmup_s: float
    seconds: float
    drain_s: float
    payload_size: int
    client_prefix: str

    @property
    def warmup(self) -> int:
        return round(self.warmup_s * self.rate)

    @property
    def measured(self) -> int:
        return max(1, round(self.seconds * self.rate))


@dataclass
class E2EResult:
    """What the generator measured. Latency arrays are ``array('q')`` bytes, ns."""

    sent: int = 0  # measured readings sent
    received: int = 0  # their commands that arrived (distinct)
    warmup_sent: int = 0
    warmup_received: int = 0
    pubacks: int = 0  # measured readings PUBACKed
    duplicates: int = 0
    misrouted: int = 0  # a command that arrived at another device than its reading's
    unexpected: int = 0  # a PUBLISH that was not one of ours
    missing_seqs: list[int] = field(default_factory=list)  # the first few
    t_first_ns: int = 0  # first measured send
    t_last_ns: int = 0  # last measured send
    t_done_ns: int = 0  # last command or drain deadline
    max_send_lag_ns: int = 0  # worst lateness of a measured send against its schedule
    late_sends: int = 0  # measured sends more than 1 ms behind schedule
    cpu_s: float = 0.0  # the generator's own CPU over the measured span
    timed_out: bool = False  # the drain deadline passed with commands missing
    e2e_ns: bytes = b""
    pub_agent_ns: bytes = b""
    agent_dev_ns: bytes = b""
    puback_ns: bytes = b""
    sent_ns: bytes = b""  # each e2e sample's send stamp, same order


class _Generator:
    """The paced publisher and the devices, in one select loop."""

    def __init__(self, p: E2EParams) -> None:
        self.p = p
        ids = device_ids(f"{p.client_prefix}-dev", p.devices)
        socks = connect_many(
            p.host, p.port, ids, keepalive=600, own_topics=[device_topic(c) for c in ids]
        )
        self.devices = [BufferedSocket(s) for s in socks]
        self.index_of = {c: i for i, c in enumerate(ids)}
        self.topics = [f"sensors/{c}/telemetry" for c in ids]
        self.pub = MqttConn(p.host, p.port, f"{p.client_prefix}-pub")
        # Every connection by its socket: the publisher's and the devices'.
        self.conn_of: dict[socket.socket, BufferedSocket] = {self.pub.sock: self.pub}
        self.conn_of.update((d.sock, d) for d in self.devices)

    def close(self) -> None:
        self.pub.close()
        close_all([d.sock for d in self.devices])

    def run(self, results: Queue[Any]) -> E2EResult:
        p = self.p
        res = E2EResult()
        warm, total = p.warmup, p.warmup + p.measured
        seen = bytearray(total)
        e2e, pub_agent, agent_dev, puback, sent = (array.array("q") for _ in range(5))
        send_ns = [0] * 65536  # by packet id
        seq_of = [-1] * 65536
        pid = 1
        seq = 0
        got = 0  # distinct commands, warm-up included
        n_dev = p.devices
        pub = self.pub
        conn_of = self.conn_of
        socks = list(conn_of)
        mono = time.monotonic_ns
        interval_ns = 1e9 / p.rate
        drain_until = 0
        cpu0 = 0.0
        t0 = mono()
        while True:
            now = mono()
            if seq < total:
                due = due_count(now - t0, p.rate, total)
                if due > seq:
                    parts = []
                    while seq < due:
                        if seq == warm:
                            res.t_first_ns = now
                            cpu0 = time.process_time()
                            results.put(("measuring", 0, now))
                        if seq >= warm:
                            late = now - int(t0 + seq * interval_ns)
                            res.max_send_lag_ns = max(res.max_send_lag_ns, late)
                            if late > 1_000_000:
                                res.late_sends += 1
                        parts.append(
                            codec.encode_publish(
                                self.topics[seq % n_dev],
                                reading_payload(seq, now, p.payload_size),
                                1,
                                pid,
                            )
                        )
                        send_ns[pid] = now
                        seq_of[pid] = seq
                        pid = pid + 1 if pid < 65535 else 1
                        seq += 1
                    pub.out += b"".join(parts)
                    pub.flush()
                    if seq == total:
                        res.t_last_ns = now
                        res.cpu_s = time.process_time() - cpu0
                        drain_until = now + int(p.drain_s * 1e9)
                        results.put(("sent", 0, now))
            elif got >= total and res.pubacks >= total - warm:
                res.t_done_ns = now
                break
            elif now > drain_until:
                res.t_done_ns = now
                res.timed_out = True
                break
            if seq < total:
                timeout = min(0.05, max(0.0, (t0 + seq * interval_ns - mono()) / 1e9))
            else:
                timeout = 0.05
            wlist_in = [c.sock for c in conn_of.values() if c.out]
            rlist, wlist, _ = select.select(socks, wlist_in, [], timeout)
            for s in wlist:
                conn_of[s].flush()
            for s in rlist:
                conn = conn_of[s]
                if not conn.receive(RECV_SIZE):
                    continue
                now = mono()
                buf = conn.inbuf
                packets, used = codec.split_packets(buf)
                if conn is pub:
                    for first, start, _end in packets:
                        if first >> 4 != codec.PUBACK:
                            continue
                        ack = (buf[start] << 8) | buf[start + 1]
                        if seq_of[ack] >= warm:
                            res.pubacks += 1
                            puback.append(now - send_ns[ack])
                        seq_of[ack] = -1
                    del buf[:used]
                    continue
                for first, start, end in packets:  # commands at a device
                    if first >> 4 != codec.PUBLISH:
                        continue
                    msg = codec.parse_publish(first & 0x0F, bytes(buf[start:end]))
                    if msg.qos:
                        conn.out += codec.encode_puback(msg.packet_id)
                    try:
                        body = json.loads(msg.payload)
                        n, sent_at, agent_at = body["seq"], body["sent_ns"], body["agent_ns"]
                    except (ValueError, KeyError, TypeError):
                        res.unexpected += 1
                        continue
                    if not (isinstance(n, int) and 0 <= n < total):
                        res.unexpected += 1
                        continue
                    if seen[n]:
                        res.duplicates += 1
                        continue
                    seen[n] = 1
                    got += 1
                    if self.index_of.get(device_of_topic(msg.topic)) != n % n_dev:
                        res.misrouted += 1
                    if n >= warm:
                        res.received += 1
                        e2e.append(now - sent_at)
                        sent.append(sent_at)
                        pub_agent.append(agent_at - sent_at)
                        agent_dev.append(now - agent_at)
                    else:
                        res.warmup_received += 1
                del buf[:used]
                conn.flush()
        res.sent = max(0, seq - warm)
        res.warmup_sent = min(seq, warm)
        res.missing_seqs = [i for i in range(seq) if not seen[i]][:20]
        res.e2e_ns, res.pub_agent_ns = e2e.tobytes(), pub_agent.tobytes()
        res.agent_dev_ns, res.puback_ns = agent_dev.tobytes(), puback.tobytes()
        res.sent_ns = sent.tobytes()
        return res


def generator_main(p: E2EParams, results: Queue[Any], start: Event) -> None:
    """Process entry: connect and subscribe, report ready, wait for start, run, report."""
    gen: _Generator | None = None
    try:
        gen = _Generator(p)
        results.put(("ready", 0, ""))
        if not start.wait(120.0):
            raise TimeoutError("never told to start")
        results.put(("result", 0, gen.run(results)))
    except Exception as exc:  # reported to the parent, which fails the run
        results.put(("error", 0, f"{type(exc).__name__}: {exc}"))
    finally:
        if gen is not None:
            try:
                gen.close()
            except OSError:
                pass
