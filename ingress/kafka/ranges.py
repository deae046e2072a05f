"""Reading ranges of Kafka partitions again, for a resumed session (DESIGN §2)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from confluent_kafka import Consumer, KafkaError, TopicPartition

from ingress.kafka.topic_reader import Record

PartitionKey = tuple[str, int]


async def read_ranges(
    bootstrap: str, ranges: dict[PartitionKey, tuple[int, int]], name: str
) -> AsyncIterator[list[Record]]:
    """Yield the records of each partition in ``[start, end)``, in offset order per partition.

    A short-lived consumer with assigned partitions (no group) reads them on a thread;
    batches come back through a queue so a slow client only slows its own replay.
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
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bayou-{name}",
                "client.id": f"bayou-{name}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 5,
            }
        )
        try:
            consumer.assign([TopicPartition(t, p, s) for (t, p), (s, _) in todo.items()])
            left = dict(todo)
            while left and not stop.is_set():
                msgs = consumer.consume(1000, 0.2)
                batch: list[Record] = []
                for m in msgs:
                    key = (m.topic(), m.partition())
                    err = m.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            raise RuntimeError(f"replay read failed: {err}")
                        # At the end of what exists: nothing more of this range will come.
                        if key in left and m.offset() >= left[key][1]:  # type: ignore[operator]
                            del left[key]
                        continue
                    rng = left.get(key)  # type: ignore[arg-type]
                    if rng is None or m.offset() >= rng[1]:  # type: ignore[operator]
                        continue
                    batch.append(
                        Record(m.topic(), m.partition(), m.offset(), m.key(),  # type: ignore[arg-type]
                               m.headers() or [], m.value())  # type: ignore[arg-type]
                    )  # fmt: skip
                    if m.offset() + 1 >= rng[1]:  # type: ignore[operator]
                        del left[key]  # type: ignore[arg-type]
                if batch:
                    put(batch)
            put(None)
        except BaseException as exc:  # handed to the reader of the queue
            put(exc)
        finally:
            consumer.close()

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
