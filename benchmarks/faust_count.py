"""The ``agent_count`` work as a stock faust-streaming app: the reference DESIGN §8 measured.

Per record: validate the payload with :class:`benchmarks.agent_data.Telemetry` and add one to the
device's count in a Faust table (``store="rocksdb://"`` through rocksdict, changelog topic).
``faust -A benchmarks.faust_count worker`` runs it; the harness (:mod:`benchmarks.agent_faust`)
names the app, topic, broker and data dir with ``BENCH_FAUST_*`` variables. Settings a Faust user
would pick here: a 6 s session timeout (Faust's 60 s default makes the embedded broker answer the
first JoinGroup only after 30 s), commits every 0.5 s (so the harness can follow progress from the
committed offsets), and the root logger raised to WARNING (a Faust worker leaves it at DEBUG,
about 13 % of its CPU: DESIGN §11). The agent iterates events one by one: a table update must be
made in the context of its event (its changelog partition is the event's), which ``stream.take``
batches do not give.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import faust

from benchmarks.agent_data import Telemetry

app = faust.App(
    os.environ.get("BENCH_FAUST_APP", "bench_faust_count"),
    broker=f"kafka://{os.environ.get('BENCH_FAUST_BROKER', '127.0.0.1:9092')}",
    store="rocksdb://",
    datadir=os.environ.get("BENCH_FAUST_DATADIR", "/tmp/bench-faust"),
    broker_session_timeout=6.0,
    broker_heartbeat_interval=2.0,
    broker_commit_interval=0.5,
    topic_partitions=4,
    web_enabled=False,
    producer_acks=-1,
)
topic = app.topic(
    os.environ.get("BENCH_FAUST_TOPIC", "bench.agents.telemetry"),
    key_type=bytes,
    value_type=bytes,
    value_serializer="raw",
    key_serializer="raw",
)
counts = app.Table("counts", default=int, partitions=4)


@app.agent(topic)
async def count(stream: faust.StreamT[Any]) -> AsyncIterator[None]:
    # Per event, as Faust's table updates need: each write goes to the changelog partition of
    # the event being processed (a batch from stream.take has no per-event context).
    async for key, value in stream.items():
        Telemetry.model_validate_json(value)
        counts[key] += 1
        yield None


@app.task  # type: ignore[untyped-decorator]
async def _quiet() -> None:
    # Runs once the worker has set up logging (which leaves the root logger at DEBUG).
    logging.getLogger().setLevel(logging.WARNING)
