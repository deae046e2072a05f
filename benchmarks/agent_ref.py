"""Hand-written aiokafka loops: the references of the agent benchmarks, one process each.

``python -m benchmarks.agent_ref count|window --bootstrap ... --topic ... --records N ...``
prints one JSON line with its figures. What each loop does per batch (``getmany`` of at most
1,000 records, the runtime's batch; the consumer and producer settings are the runtime's too:
fetch wait 10 ms, ``acks=all``, linger 1 ms, no idempotence):

1. validate every payload with :class:`benchmarks.agent_data.Telemetry`
   (``model_validate_json``, as the agent does) and update the state in memory:
   ``count``: +1 for the record key; ``window``: fold the temperature into the key's 10 s
   tumbling window (event time ``ts``, grace 15 s, watermark = highest event time seen; late
   readings dropped), and close every window whose end + grace the watermark has passed;
2. ``window`` only: produce one record per closed window (``WindowResult.as_dict()`` JSON, header
   ``bayou.result_id``) and await the acknowledgements;
3. produce each changed key's state (JSON) and one ``offsets`` entry per input partition to a
   changelog topic, on the key's input partition, and await the acknowledgements;
4. write the same entries and the changelog offsets reached to RocksDB (rocksdict) in one write
   batch;
5. commit the input offsets.

Timing: ``join_s`` from ``consumer.start()`` to the partition assignment; ``seconds`` from the
assignment to the end of the batch holding the ``records``-th record (after its commit); CPU
seconds (``time.process_time``, every thread) over the same span.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from rocksdict import Options, Rdict, WriteBatch

from benchmarks.agent_data import WINDOW_GRACE, WINDOW_SIZE, Telemetry

BATCH = 1000


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.at: float | None = None
        self.cpu: float = 0.0
        self.event = asyncio.Event()

    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if assigned and self.at is None:
            self.at = time.monotonic()
            self.cpu = time.process_time()
            self.event.set()


class CountState:
    """``count``: records per key."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def fold(self, key: str, r: Telemetry, changed: set[str]) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1
        changed.add(key)

    def state(self, key: str) -> Any:
        return self.counts[key]

    def close(self) -> list[dict[str, Any]]:
        return []


class WindowState:
    """``window``: the open 10 s windows per key, ``[sum, n]`` of the temperature."""

    def __init__(self, size: float = WINDOW_SIZE, grace: float = WINDOW_GRACE) -> None:
        self.size, self.grace = size, grace
        self.open: dict[str, dict[float, list[float]]] = {}
        self.heap: list[tuple[float, str, float]] = []  # (end, key, start)
        self.watermark = -math.inf
        self.late = 0
        self.changed: set[str] = set()

    def fold(self, key: str, r: Telemetry, changed: set[str]) -> None:
        start = math.floor(r.ts / self.size) * self.size
        end = start + self.size
        if r.ts > self.watermark:
            self.watermark = r.ts
        if end + self.grace <= self.watermark:
            self.late += 1
            return
        wins = self.open.setdefault(key, {})
        w = wins.get(start)
        if w is None:
            w = wins[start] = [0.0, 0]
            heapq.heappush(self.heap, (end, key, start))
        w[0] += r.temperature
        w[1] += 1
        changed.add(key)

    def close(self, changed: set[str] | None = None, to: float | None = None) -> list[Any]:
        wm = self.watermark if to is None else to
        out: list[dict[str, Any]] = []
        while self.heap and self.heap[0][0] + self.grace <= wm:
            end, key, start = heapq.heappop(self.heap)
            wins = self.open[key]
            s, n = wins.pop(start)
            if not wins:
                del self.open[key]
            if changed is not None:
                changed.add(key)
            out.append(
                {
                    "id": f"{key}|{start!r}|{end!r}",
                    "key": key,
                    "start": start,
                    "end": end,
                    "count": int(n),
                    "values": {"mean": s / n},
                }
            )
        return out

    def state(self, key: str) -> Any:
        wins = self.open.get(key)
        return None if not wins else {repr(s): w for s, w in wins.items()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    state: CountState | WindowState = CountState() if args.kind == "count" else WindowState()
    listener = _Assigned()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=2_000,
        max_poll_interval_ms=300_000,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap, acks="all", linger_ms=1, enable_idempotence=False
    )
    db = Rdict(args.state_dir, Options(raw_mode=True))
    consumer.subscribe([args.topic], listener=listener)
    done = 0
    windows = 0
    changelog_records = 0
    t_end: float | None = None
    cpu_end = 0.0
    await producer.start()
    try:
        t_start = time.monotonic()
        await consumer.start()
        deadline = t_start + args.deadline
        while done < args.records and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=BATCH)
            if not batches:
                continue
            changed: dict[int, set[str]] = {}
            fold = state.fold
            for tp, recs in batches.items():
                keys = changed.setdefault(tp.partition, set())
                for rec in recs:
                    fold(rec.key.decode(), Telemetry.model_validate_json(rec.value), keys)
                done += len(recs)
            if isinstance(state, WindowState):
                key_part = {k: p for p, ks in changed.items() for k in ks}
                closed = state.close()
                for res in closed:
                    changed.setdefault(key_part.get(res["key"], 0), set()).add(res["key"])
                sends = [
                    await producer.send(
                        args.output,
                        value=json.dumps(res).encode(),
                        key=res["key"].encode(),
                        headers=[("bayou.result_id", res["id"].encode())],
                    )
                    for res in closed
                ]
                await asyncio.gather(*sends)
                windows += len(closed)
            entries: list[tuple[int, bytes, bytes | None]] = []
            for tp, recs in batches.items():
                for key in changed.get(tp.partition, ()):
                    v = state.state(key)
                    entries.append(
                        (tp.partition, key.encode(), None if v is None else json.dumps(v).encode())
                    )
                off = json.dumps(recs[-1].offset + 1).encode()
                entries.append((tp.partition, b"offsets:" + tp.topic.encode(), off))
            futures = [
                await producer.send(args.changelog, value=v, key=k, partition=p)
                for p, k, v in entries
            ]
            metas = await asyncio.gather(*futures)
            changelog_records += len(metas)
            wb = WriteBatch(raw_mode=True)
            for p, k, v in entries:
                if v is None:
                    wb.delete(b"s:%d\0" % p + k)
                else:
                    wb.put(b"s:%d\0" % p + k, v)
            for m in metas:
                wb.put(b"c:%d" % m.partition, str(m.offset + 1).encode())
            db.write(wb)
            await consumer.commit({tp: recs[-1].offset + 1 for tp, recs in batches.items()})
            if done >= args.records:
                t_end = time.monotonic()
                cpu_end = time.process_time()
        late = state.late if isinstance(state, WindowState) else 0
        # Not timed: the windows still open at the end (the worker closes them as its
        # watermark advances with the wall clock).
        flushed = len(state.close(to=math.inf)) if isinstance(state, WindowState) else 0
    finally:
        await consumer.stop()
        await producer.stop()
        db.close()
    t_assigned = listener.at
    seconds = None if t_end is None or t_assigned is None else t_end - t_assigned
    return {
        "records": done,
        "join_s": None if t_assigned is None else round(t_assigned - t_start, 3),
        "seconds": None if seconds is None else round(seconds, 3),
        "cpu_s": round(cpu_end - listener.cpu, 3) if t_end is not None else None,
        "changelog_records": changelog_records,
        "windows_emitted": windows,
        "windows_open_at_end": flushed,
        "late": late,
        "timed_out": done < args.records,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.agent_ref", description=__doc__)
    ap.add_argument("kind", choices=["count", "window"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--changelog", required=True)
    ap.add_argument("--output", default="bench.ref.windows")
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--records", type=int, required=True)
    ap.add_argument("--deadline", type=float, default=120.0)
    args = ap.parse_args(argv)
    Path(args.state_dir).mkdir(parents=True, exist_ok=True)
    print(json.dumps(asyncio.run(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
