"""Reading bounded ranges of Kafka partitions again, for connections catching up (DESIGN §2).

A resumed session missed what was published while it was away, and a client whose in-flight
window filled left live delivery: :mod:`ingress.outbound.catch_up` brings both up to date by
reading the delivery partitions again from where each was served up to where the node is.
The Kafka side is a short-lived :class:`kafkaio.reader.PartitionReader` on a thread; this
module hands its batches to the event loop through a bounded queue.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from kafkaio.reader import TP, PartitionReader, Record
from kafkaio.security import PLAINTEXT, KafkaSecurity


async def read_ranges(
    bootstrap: str,
    ranges: dict[TP, tuple[int, int]],
    name: str,
    *,
    security: KafkaSecurity = PLAINTEXT,
) -> AsyncIterator[list[Record]]:
    """Yield the records of each partition in ``[start, end)``, in offset order per partition.

    Batches come back through a small queue, so a slow consumer of them slows the read (and
    nothing piles up in memory); leaving the iteration early stops the thread.
    """
    todo = {k: v for k, v in ranges.items() if v[0] < v[1]}
    if not todo:
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[list[Record] | BaseException | None] = asyncio.Queue(maxsize=8)
    stop = threading.Event()

    def put(item: list[Record] | BaseException | None) -> None:
        fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        while not stop.is_set():
            try:
                fut.result(timeout=0.5)
                return
            except TimeoutError:
                continue

    def read() -> None:
        try:
            # read_committed like live delivery: the same records, committed ones only.
            reader = PartitionReader(
                bootstrap, name, security=security, read_committed=True, fetch_wait_ms=5
            )
        except BaseException as exc:  # handed to the reader of the queue
            put(exc)
            return
        try:
            reader.assign(
                {tp: start for tp, (start, _) in todo.items()},
                {tp: end for tp, (_, end) in todo.items()},
            )
            while reader.remaining and not stop.is_set():
                records = reader.poll(0.2).records
                if records:
                    put(records)
            put(None)
        except BaseException as exc:
            put(exc)
        finally:
            reader.close()

    thread = threading.Thread(target=read, name=f"bayou-{name}", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
