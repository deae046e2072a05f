"""The ``e2e_latency`` scenario of ``python -m benchmarks.run``: publish -> agent -> command.

DESIGN §9: "publish -> agent -> command delivered to the device, p99 under 20 ms at 1,000 msg/s
on the embedded stack". For each run, on its own fresh embedded Kafka (Tansu, memory storage,
a free port of 127.0.0.1), the scenario starts a real ``bayou ingress`` and a real ``bayou worker
--agents benchmarks.agents_command`` (free ports, stopped by process id after the run; the worker
is ready once it has its partitions). The app's one agent answers every reading on
``sensors/<device>/telemetry`` with a QoS 1 command on ``devices/<device>/commands`` that echoes
the reading's sequence number and send stamp.

One generator process (raw sockets, :mod:`benchmarks.codec`; never a broker's process) holds
``--e2e-devices`` device connections, each subscribed at QoS 1 to its own command topic, and one
publisher connection that sends QoS 1 readings round-robin over the devices, paced against the
clock at ``--e2e-rate`` msg/s in all (message *i* is due at ``t0 + i / rate``; a message is
stamped with ``time.monotonic_ns()`` as it is written, one clock for every process of the host).
The first ``--e2e-warmup`` seconds are not counted; then ``--e2e-seconds`` are measured, and
the generator waits up to ``--e2e-drain`` seconds for the last commands.

Latency = the command's arrival at its device - the reading's send stamp. The command also
carries the worker's clock when the agent ran, which splits it into publish -> agent and
agent -> device; the publisher's PUBACKs (Kafka acknowledged the reading) give a third leg.
CPU seconds of the ingress, the worker, Tansu and the generator are read over the measured
span (first to last measured send), and the machine's busy CPU over it (``other_cpu_s`` is what
neither the stack nor the generator used: other work on the machine); the worker's batches over
it from its metrics endpoint; p50/p99 per 5 s of send time show a drift during the run.
Every command must arrive exactly once: a missing one is an error of the run, not left out.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import queue
import select
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from benchmarks import codec, fleet
from benchmarks.brokers import HOST, BrokerError, _log_tail, find_bayou, process_cpu_s, tree_cpu_s
from benchmarks.stats import medians

REPO = Path(__file__).resolve().parent.parent
APP_MODULE = "benchmarks.agents_command"
TARGET_P99_MS = 20.0
TARGET_RATE = 1000.0
RECV_SIZE = 1 << 16
TIMELINE_S = 5.0
# (name, per mille): nearest-rank percentiles.
PERCENTILES = (("p50", 500), ("p90", 900), ("p99", 990), ("p999", 999))
# Worker metrics read around the measured span.
W_RECORDS = "bayou_agent_records_in_total"
W_BATCHES = "bayou_agent_batch_seconds_count"
W_BATCH_S = "bayou_agent_batch_seconds_sum"


# Pure helpers ---------------------------------------------------------------------------------


def percentiles_ms(values_ns: list[int] | array.array[int]) -> dict[str, float | None]:
    """p50/p90/p99/p99.9 (nearest rank), max and mean of latencies in ns, as ms (3 decimals)."""
    vals = sorted(values_ns)
    if not vals:
        return {**{k: None for k, _ in PERCENTILES}, "max": None, "mean": None}
    n = len(vals)
    out: dict[str, float | None] = {}
    for key, per_mille in PERCENTILES:
        # Nearest rank: the smallest value with at least that share of the values at or below.
        rank = -(-per_mille * n // 1000)  # ceil, in integers
        out[key] = round(vals[max(0, rank - 1)] / 1e6, 3)
    out["max"] = round(vals[-1] / 1e6, 3)
    out["mean"] = round(sum(vals) / n / 1e6, 3)
    return out


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


def machine_busy_s(stat_text: str, ticks: int) -> float:
    """CPU seconds all cores spent busy (not idle, not iowait), from ``/proc/stat``'s first line."""
    fields = stat_text.splitlines()[0].split()
    if fields[0] != "cpu":
        raise ValueError("not /proc/stat")
    vals = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(vals) - vals[3] - vals[4]) / ticks


def timeline(
    sent_ns: Sequence[int], lat_ns: Sequence[int], t0_ns: int, slice_s: float
) -> list[dict[str, float | None]]:
    """p50/p99/max of the latencies of the readings sent in each ``slice_s`` of the run."""
    slices: dict[int, list[int]] = {}
    for t, v in zip(sent_ns, lat_ns, strict=True):
        slices.setdefault(max(0, int((t - t0_ns) / 1e9 // slice_s)), []).append(v)
    out: list[dict[str, float | None]] = []
    for i in sorted(slices):
        pc = percentiles_ms(slices[i])
        out.append({"from_s": round(i * slice_s, 1), "n": len(slices[i]), "p50": pc["p50"],
                    "p99": pc["p99"], "max": pc["max"]})  # fmt: skip
    return out


def device_of_topic(topic: str) -> str:
    """The device level of ``devices/<device>/commands``."""
    parts = topic.split("/")
    return parts[1] if len(parts) == 3 else ""


# The generator --------------------------------------------------------------------------------


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


class _Device:
    """A device connection: socket, input buffer, pending PUBACKs."""

    def __init__(self, index: int, client_id: str, sock: socket.socket) -> None:
        self.index = index
        self.client_id = client_id
        self.sock = sock
        self.inbuf = bytearray()
        self.out = bytearray()

    def flush(self) -> None:
        if self.out:
            try:
                n = self.sock.send(self.out)
            except BlockingIOError:
                return
            del self.out[:n]


class _Generator:
    """The paced publisher and the devices, in one select loop."""

    def __init__(self, p: E2EParams) -> None:
        from benchmarks.load import _Conn

        self.p = p
        ids = fleet.device_ids(f"{p.client_prefix}-dev", p.devices)
        socks = fleet.connect_many(
            p.host, p.port, ids, keepalive=600, own_topics=[fleet.device_topic(c) for c in ids]
        )
        self.devices = [_Device(i, c, s) for i, (c, s) in enumerate(zip(ids, socks, strict=True))]
        self.by_sock = {d.sock: d for d in self.devices}
        self.index_of = {c: i for i, c in enumerate(ids)}
        self.topics = [f"sensors/{c}/telemetry" for c in ids]
        self.pub = _Conn(p.host, p.port, f"{p.client_prefix}-pub")

    def close(self) -> None:
        self.pub.close()
        fleet.close_all([d.sock for d in self.devices])

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
        socks = [pub.sock] + [d.sock for d in self.devices]
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
            wlist_in = [pub.sock] if pub.out else []
            wlist_in += [d.sock for d in self.devices if d.out]
            rlist, wlist, _ = select.select(socks, wlist_in, [], timeout)
            for s in wlist:
                if s is pub.sock:
                    pub.flush()
                else:
                    self.by_sock[s].flush()
            for s in rlist:
                try:
                    chunk = s.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise ConnectionError("the broker closed a connection")
                now = mono()
                if s is pub.sock:
                    buf = pub.inbuf
                    buf += chunk
                    packets, used = codec.split_packets(buf)
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
                dev = self.by_sock[s]
                buf = dev.inbuf
                buf += chunk
                packets, used = codec.split_packets(buf)
                for first, start, end in packets:
                    if first >> 4 != codec.PUBLISH:
                        continue
                    msg = codec.parse_publish(first & 0x0F, bytes(buf[start:end]))
                    if msg.qos:
                        dev.out += codec.encode_puback(msg.packet_id)
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
                dev.flush()
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


# The stack ------------------------------------------------------------------------------------


def _metrics(port: int, names: list[str]) -> dict[str, float]:
    from benchmarks.agent_data import parse_metrics

    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=2.0) as r:
            return parse_metrics(r.read().decode(), names)
    except OSError:
        return {}


def _bayou_env(**extra: str) -> dict[str, str]:
    """This environment without BAYOU_* settings (a routes file would change the topics)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAYOU_")}
    env.update(extra)
    return env


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    """SIGTERM, wait, SIGKILL: by process id."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class E2EStack:
    """Tansu, ``bayou ingress`` and ``bayou worker --agents benchmarks.agents_command``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.kafka: Any = None
        self.ingress: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.mqtt_port = 0
        self.ingress_metrics = 0
        self.worker_metrics = 0
        self.bootstrap = ""
        self.start_s: dict[str, float] = {}

    def start(self) -> None:
        from bayou.embedded import EmbeddedKafka
        from bayou.net import free_port

        self.workdir.mkdir(parents=True, exist_ok=True)
        binary = find_bayou()
        t = time.monotonic()
        self.kafka = EmbeddedKafka(HOST)
        self.bootstrap = self.kafka.start(log=self.workdir / "tansu.log")
        self.start_s["kafka"] = round(time.monotonic() - t, 3)
        self.mqtt_port = free_port(HOST)
        self.ingress_metrics = free_port(HOST)
        self.worker_metrics = free_port(HOST)
        common = {"BAYOU_KAFKA_BOOTSTRAP": self.bootstrap, "BAYOU_METRICS_HOST": HOST}
        t = time.monotonic()
        log = self.workdir / "ingress.log"
        with open(log, "wb") as out:
            self.ingress = subprocess.Popen(
                [binary, "ingress"],
                env=_bayou_env(
                    **common,
                    BAYOU_MQTT_HOST=HOST,
                    BAYOU_MQTT_PORT=str(self.mqtt_port),
                    BAYOU_INGRESS_METRICS_PORT=str(self.ingress_metrics),
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_ready(self.ingress, self.ingress_metrics, "bayou_ingress_ready", log, 60.0)
        self.start_s["ingress"] = round(time.monotonic() - t, 3)
        t = time.monotonic()
        log = self.workdir / "worker.log"
        with open(log, "wb") as out:
            self.worker = subprocess.Popen(
                [binary, "worker", "--agents", APP_MODULE],
                cwd=REPO,
                env=_bayou_env(
                    **common,
                    BAYOU_WORKER_METRICS_PORT=str(self.worker_metrics),
                    BAYOU_STATE_DIR=str(self.workdir / "state"),
                    BENCH_AGENT_APP=f"bench_e2e_{os.getpid()}",
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        # Ready = it has its partitions (the group join takes ~5 s on the embedded broker).
        self._wait_ready(self.worker, self.worker_metrics, "bayou_agent_ready", log, 90.0)
        self.start_s["worker"] = round(time.monotonic() - t, 3)

    @staticmethod
    def _wait_ready(
        proc: subprocess.Popen[bytes], port: int, metric: str, log: Path, timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while _metrics(port, [metric]).get(metric) != 1.0:
            if proc.poll() is not None:
                raise BrokerError(
                    f"{log.stem} exited with code {proc.returncode}; log {log}:\n{_log_tail(log)}"
                )
            if time.monotonic() > deadline:
                raise BrokerError(f"{metric} not 1 after {timeout:.0f}s; log {log}")
            time.sleep(0.1)

    def check_alive(self) -> None:
        for name, proc in (("ingress", self.ingress), ("worker", self.worker)):
            if proc is None or proc.poll() is not None:
                log = self.workdir / f"{name}.log"
                raise RuntimeError(f"bayou {name} is not running; log {log}:\n{_log_tail(log)}")

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of the ingress (and children), the worker, Tansu and the whole
        machine (every core, every process)."""
        assert self.ingress is not None and self.worker is not None and self.kafka is not None
        with open("/proc/stat") as f:
            machine = machine_busy_s(f.read(), os.sysconf("SC_CLK_TCK"))
        return {
            "ingress": tree_cpu_s(self.ingress.pid)[0],
            "worker": tree_cpu_s(self.worker.pid)[0],
            "kafka": process_cpu_s(self.kafka.pid),
            "machine": machine,
        }

    def worker_metrics_now(self) -> dict[str, float]:
        return _metrics(self.worker_metrics, [W_RECORDS, W_BATCHES, W_BATCH_S])

    def stop(self) -> None:
        _stop(self.worker)
        _stop(self.ingress)
        if self.kafka is not None:
            self.kafka.stop()
        self.worker = self.ingress = self.kafka = None


# One run --------------------------------------------------------------------------------------


def _expect(results: Any, kind: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"the latency generator did not report {kind!r} in {timeout:.0f}s")
        try:
            k, _idx, payload = results.get(timeout=left)
        except queue.Empty:
            continue
        if k == "error":
            raise RuntimeError(f"latency generator failed: {payload}")
        if k == kind:
            return payload


def _ns(raw: bytes) -> array.array[int]:
    a = array.array("q")
    a.frombytes(raw)
    return a


def run_e2e_once(stack: E2EStack, args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    """One measured run against a started stack (module docs)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    results: mp.Queue[Any] = ctx.Queue()
    start = ctx.Event()
    p = E2EParams(
        host=HOST,
        port=stack.mqtt_port,
        devices=args.e2e_devices,
        rate=args.e2e_rate,
        warmup_s=args.e2e_warmup,
        seconds=args.e2e_seconds,
        drain_s=args.e2e_drain,
        payload_size=args.payload,
        client_prefix=f"e2e-{run_id}",
    )
    proc = ctx.Process(target=generator_main, args=(p, results, start), daemon=True)
    proc.start()
    try:
        _expect(results, "ready", 60.0)
        stack.check_alive()
        start.set()
        _expect(results, "measuring", args.e2e_warmup + 30.0)
        cpu0, m0 = stack.cpu(), stack.worker_metrics_now()
        _expect(results, "sent", args.e2e_seconds + 30.0)
        cpu1, m1 = stack.cpu(), stack.worker_metrics_now()
        res: E2EResult = _expect(results, "result", args.e2e_drain + 30.0)
        stack.check_alive()
    finally:
        start.set()
        proc.join(10.0)
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, 9)
            proc.join()
    span_s = (res.t_last_ns - res.t_first_ns) / 1e9
    cpu = {k: round(cpu1[k] - cpu0[k], 3) for k in cpu0}
    out: dict[str, Any] = {
        "sent": res.sent,
        "received": res.received,
        "missing": res.sent - res.received,
        "duplicates": res.duplicates,
        "misrouted": res.misrouted,
        "unexpected": res.unexpected,
        "warmup_sent": res.warmup_sent,
        "warmup_missing": res.warmup_sent - res.warmup_received,
        "missing_seqs": res.missing_seqs,
        "pubacks_missing": res.sent - res.pubacks,
        "seconds": round(span_s, 3),
        "rate": round((res.sent - 1) / span_s, 1) if span_s > 0 else None,
        "max_send_lag_ms": round(res.max_send_lag_ns / 1e6, 3),
        "late_sends": res.late_sends,
        "drain_s": round((res.t_done_ns - res.t_last_ns) / 1e9, 3),
        "timed_out": res.timed_out,
    }
    e2e_ns = _ns(res.e2e_ns)
    lat = percentiles_ms(e2e_ns)
    out.update({f"{k}_ms": v for k, v in lat.items()})
    out["legs"] = {
        "publish_to_puback": percentiles_ms(_ns(res.puback_ns)),
        "publish_to_agent": percentiles_ms(_ns(res.pub_agent_ns)),
        "agent_to_device": percentiles_ms(_ns(res.agent_dev_ns)),
    }
    # Does the latency drift during the run? Per 5 s of send time.
    out["timeline"] = timeline(_ns(res.sent_ns), e2e_ns, res.t_first_ns, TIMELINE_S)
    out["ingress_cpu_s"] = cpu["ingress"]
    out["worker_cpu_s"] = cpu["worker"]
    out["kafka_cpu_s"] = cpu["kafka"]
    out["generator_cpu_s"] = round(res.cpu_s, 3)
    # What else ran meanwhile: the machine's busy CPU-seconds minus this stack's and the
    # generator's (includes this harness process and other users of the machine).
    out["machine_cpu_s"] = cpu["machine"]
    ours = cpu["ingress"] + cpu["worker"] + cpu["kafka"] + res.cpu_s
    out["other_cpu_s"] = round(max(0.0, cpu["machine"] - ours), 3)
    out["cores"] = os.cpu_count()
    if m0 and m1 and W_BATCHES in m0 and W_BATCHES in m1:
        batches = m1[W_BATCHES] - m0[W_BATCHES]
        records = m1.get(W_RECORDS, 0.0) - m0.get(W_RECORDS, 0.0)
        busy = m1.get(W_BATCH_S, 0.0) - m0.get(W_BATCH_S, 0.0)
        out["worker_batches"] = {
            "batches": int(batches),
            "records": int(records),
            "records_per_batch": round(records / batches, 1) if batches else None,
            "batches_per_s": round(batches / span_s, 2) if span_s > 0 else None,
            "batch_ms_mean": round(busy / batches * 1000, 3) if batches else None,
        }
    return out


_MEDIAN_KEYS = [
    "rate",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
    "mean_ms",
    "ingress_cpu_s",
    "worker_cpu_s",
    "kafka_cpu_s",
    "generator_cpu_s",
    "machine_cpu_s",
    "other_cpu_s",
    "seconds",
    "max_send_lag_ms",
]


def e2e_entry(
    runs: list[dict[str, Any]], args: argparse.Namespace, title: str, extra: dict[str, Any]
) -> dict[str, Any]:
    """The JSON entry: medians over the runs, totals of what was lost, the target."""
    entry: dict[str, Any] = {"name": "e2e_latency", "title": title}
    entry["parameters"] = {
        "rate": args.e2e_rate,
        "seconds": args.e2e_seconds,
        "warmup_s": args.e2e_warmup,
        "devices": args.e2e_devices,
        "drain_s": args.e2e_drain,
        "payload": args.payload,
        "repeat": args.e2e_repeat,  # each on a fresh stack
    }
    entry.update(extra)
    if runs:
        b: dict[str, Any] = dict(medians(runs, _MEDIAN_KEYS))
        for key in ("sent", "received", "missing", "duplicates", "misrouted", "warmup_missing",
                    "pubacks_missing"):  # fmt: skip
            b[key] = sum(r[key] for r in runs)
        b["runs"] = runs
        entry["bayou"] = b
    else:
        entry["bayou"] = None
    entry["target"] = {"p99_ms_below": TARGET_P99_MS, "at_rate": TARGET_RATE, "all_delivered": True}
    b = entry["bayou"] or {}
    p99 = b.get("p99_ms")
    entry["target_met"] = (
        None
        if p99 is None
        else bool(p99 < TARGET_P99_MS and b["missing"] == 0 and b["warmup_missing"] == 0)
    )
    # The target is stated at 1,000 msg/s: a run at another rate says nothing about it.
    entry["target_applies"] = args.e2e_rate == TARGET_RATE
    return entry


def _print(line: str) -> None:
    from benchmarks.run import console

    console.print(line, markup=False, highlight=False)


def _run_line(rep: int, repeats: int, r: dict[str, Any]) -> str:
    def f(v: Any, spec: str = ".2f") -> str:
        return "-" if v is None else format(v, spec)

    return (
        f"e2e_latency run {rep + 1}/{repeats}: {f(r['rate'], ',.0f')} msg/s  "
        f"p50 {f(r['p50_ms'])}  p90 {f(r['p90_ms'])}  p99 {f(r['p99_ms'])}  "
        f"p99.9 {f(r['p999_ms'])}  max {f(r['max_ms'])} ms  "
        f"{r['received']:,}/{r['sent']:,} commands  CPU ingress {r['ingress_cpu_s']:.2f} s, "
        f"worker {r['worker_cpu_s']:.2f} s, kafka {r['kafka_cpu_s']:.2f} s, "
        f"generator {r['generator_cpu_s']:.2f} s, everything else {r['other_cpu_s']:.2f} s "
        f"(of {r['seconds']:.1f} s x {r['cores']} cores); sends up to "
        f"{r['max_send_lag_ms']:.1f} ms behind schedule, {r['late_sends']:,} more than 1 ms"
        + (f"  MISSING {r['missing']:,}" if r["missing"] else "")
        + (f"  warm-up missing {r['warmup_missing']:,}" if r["warmup_missing"] else "")
    )


def run_e2e_scenario(
    title: str, args: argparse.Namespace, workdir: Path, errors: dict[str, str]
) -> dict[str, Any]:
    """``e2e_latency`` (module docs). A failed or lossy run is recorded in ``errors``.

    Each repeat gets a fresh stack: the embedded broker slows down with every batch it stores
    (docs/performance.md), so a second run on the same Kafka would measure an older broker.
    """
    runs: list[dict[str, Any]] = []
    for rep in range(args.e2e_repeat):
        stack = E2EStack(workdir / f"e2e_latency-{rep}")
        try:
            _print(f"e2e_latency run {rep + 1}: starting Tansu, bayou ingress, bayou worker ...")
            stack.start()
            r = run_e2e_once(stack, args, f"{rep}-{os.getpid()}")
            r["start_s"] = dict(stack.start_s)
        except (RuntimeError, OSError, TimeoutError) as exc:
            _print(f"e2e_latency run {rep + 1} failed: {exc}")
            errors[f"e2e_latency/{rep}"] = str(exc)
            continue
        finally:
            stack.stop()
        runs.append(r)
        _print(_run_line(rep, args.e2e_repeat, r))
        lost = r["missing"] + r["warmup_missing"] + r["pubacks_missing"]
        if lost or r["duplicates"] or r["misrouted"]:
            errors[f"e2e_latency/{rep}/delivery"] = (
                f"{r['missing']} of {r['sent']} commands missing (+{r['warmup_missing']} of "
                f"the warm-up), {r['pubacks_missing']} readings not PUBACKed, "
                f"{r['duplicates']} duplicates, {r['misrouted']} misrouted; first missing "
                f"seqs {r['missing_seqs']}"
            )
    return e2e_entry(runs, args, title, {})


def print_e2e_table(entry: dict[str, Any]) -> None:
    """The rich tables of ``e2e_latency``: the figures per run and the legs of the latency."""
    from rich.table import Table

    from benchmarks.run import _fmt, console

    b = entry.get("bayou")
    if not b:
        console.print("e2e_latency: no completed run")
        return
    par = entry["parameters"]
    table = Table(
        title=f"End-to-end latency: publish -> agent -> command at the device ({par['devices']} "
        f"devices, QoS 1, {par['rate']:,.0f} msg/s asked; latency ms, CPU s over the span)"
    )
    cols = ["run", "msg/s", "commands", "p50", "p90", "p99", "p99.9", "max", "CPU ingress",
            "worker", "kafka", "gen.", "other"]  # fmt: skip
    for col in cols:
        wide = col == "commands"  # "15,000/15,000" must not be cut
        table.add_column(col, justify="left" if col == "run" else "right", no_wrap=wide,
                         min_width=13 if wide else None)  # fmt: skip
    rows = [(str(i + 1), r) for i, r in enumerate(b["runs"])]
    if len(rows) > 1:
        rows.append(("median", b))
    for name, r in rows:
        table.add_row(
            name,
            _fmt(r.get("rate")),
            f"{r['received']:,}/{r['sent']:,}",
            _fmt(r.get("p50_ms"), 2),
            _fmt(r.get("p90_ms"), 2),
            _fmt(r.get("p99_ms"), 2),
            _fmt(r.get("p999_ms"), 2),
            _fmt(r.get("max_ms"), 2),
            _fmt(r.get("ingress_cpu_s"), 2),
            _fmt(r.get("worker_cpu_s"), 2),
            _fmt(r.get("kafka_cpu_s"), 2),
            _fmt(r.get("generator_cpu_s"), 2),
            _fmt(r.get("other_cpu_s"), 2),
        )
    console.print(table)
    legs = Table(title="Where the time goes (last run; ms)")
    for col in ["leg", "p50", "p90", "p99", "p99.9", "max", "mean"]:
        legs.add_column(col, justify="left" if col == "leg" else "right")
    last = b["runs"][-1]
    names = {
        "publish_to_puback": "publish -> PUBACK (reading in Kafka)",
        "publish_to_agent": "publish -> agent ran (worker)",
        "agent_to_device": "agent ran -> command at the device",
    }
    for key, label in names.items():
        v = last["legs"][key]
        legs.add_row(label, *(_fmt(v.get(k), 2) for k in ("p50", "p90", "p99", "p999", "max",
                                                            "mean")))  # fmt: skip
    legs.add_row("publish -> command (end to end)",
                 *(_fmt(last.get(f"{k}_ms"), 2) for k in ("p50", "p90", "p99", "p999", "max",
                                                            "mean")))  # fmt: skip
    console.print(legs)
    tl = last.get("timeline") or []
    if tl:
        console.print(
            f"p50 / p99 per {TIMELINE_S:.0f} s of the last run: "
            + ", ".join(f"{_fmt(x['p50'], 0)} / {_fmt(x['p99'], 0)}" for x in tl)
            + " ms"
        )
    wb = last.get("worker_batches")
    if wb:
        console.print(
            f"worker: {wb['batches']:,} batches in the measured span, "
            f"{_fmt(wb['records_per_batch'], 1)} records per batch, "
            f"{_fmt(wb['batches_per_s'], 1)} batches/s, {_fmt(wb['batch_ms_mean'], 2)} ms "
            "per batch (process, produce, await acks, commit)"
        )
    met = entry.get("target_met")
    verdict = "-" if met is None else ("met" if met else "NOT met")
    if not entry.get("target_applies"):
        verdict += f" (not at {TARGET_RATE:,.0f} msg/s: says nothing about the target)"
    console.print(
        f"target (DESIGN.md section 9): p99 under {TARGET_P99_MS:.0f} ms at "
        f"{TARGET_RATE:,.0f} msg/s, every command delivered: {verdict} "
        f"(p99 {_fmt(b.get('p99_ms'), 2)} ms, {b['missing']:,} missing)"
    )
