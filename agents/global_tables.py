"""Tables of other apps, readable by any agent: ``app.global_table("devices", "last_state")``.

An app's :class:`agents.app.Table` is partitioned: a worker holds the keys of its input
partitions only. A *global* view of a table is the whole of it, on every worker of every app that
asks for it (Faust's ``GlobalTable``, Kafka Streams' ``GlobalKTable``): the worker reads the
owning app's changelog ``bayou.changelog.<app>`` from the start, every partition, keeps the
table's last value per key in memory, and follows the changelog while it runs. A worker starts
processing only once each of its global tables has caught up with the changelog (the high
watermark of Fetch at start); later updates arrive within a poll interval of being committed, so
a global table is eventually consistent: an agent sees the owning app's state as of a moment
ago, never a value that was rolled back (``read_committed``).

Read-only: the owning app is the one writer. In :func:`agents.testing.run_app` a global table
holds what the test gives it (``global_tables=``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from agents.changelog_io import lasting, reader_conf

log = logging.getLogger(__name__)

_CHANGELOG_PREFIX = "bayou.changelog."
CATCH_UP_TIMEOUT_S = 60.0


class GlobalTable:
    """A read-only, whole view of another app's table (see the module docs)."""

    def __init__(self, app: str, table: str) -> None:
        self.app = app
        self.table = table
        self._data: dict[str, Any] = {}

    @property
    def changelog(self) -> str:
        """The Kafka topic this view follows."""
        return f"{_CHANGELOG_PREFIX}{self.app}"

    def get(self, key: str, default: Any = None) -> Any:
        """The last value of ``key`` (as the owning app last committed it), or ``default``."""
        return self._data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._data))

    def items(self) -> list[tuple[str, Any]]:
        """Every ``(key, value)``, sorted by key."""
        return sorted(self._data.items())

    def load(self, values: Mapping[str, Any]) -> None:
        """Replace the contents (the test helper; the worker's follower)."""
        self._data = {k: v for k, v in values.items() if v is not None}

    def apply(self, entry_key: bytes, value: bytes | None) -> None:
        """One changelog record: keep it if it is this table's."""
        try:
            parts = json.loads(entry_key)
        except ValueError:
            return
        if len(parts) != 3 or parts[0] != "t" or parts[1] != self.table:
            return
        key = parts[2]
        if value is None:
            self._data.pop(key, None)
        else:
            self._data[key] = json.loads(value)


class Follower:
    """Reads the changelogs of some global tables into them on a thread of its own."""

    def __init__(self, bootstrap: str, tables: list[GlobalTable]) -> None:
        self.tables = tables
        self._by_topic: dict[str, list[GlobalTable]] = {}
        for t in tables:
            self._by_topic.setdefault(t.changelog, []).append(t)
        self._bootstrap = bootstrap
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bayou-global-tables", daemon=True)

    def start(self) -> None:
        """Start following; :meth:`wait_caught_up` waits for the first pass."""
        if not self.tables:
            self._caught_up.set()
            return
        self._thread.start()

    def wait_caught_up(self, timeout: float = CATCH_UP_TIMEOUT_S) -> None:
        """Block until every changelog was read to its end once (raise if not in time)."""
        if not self._caught_up.wait(timeout):
            raise TimeoutError(
                f"global tables {sorted(self._by_topic)} not caught up after {timeout:.0f} s"
            )
        if self._error is not None:
            raise RuntimeError(f"following global tables failed: {self._error}")

    def check(self) -> None:
        """Raise if following failed (the worker must not go on with a stale view)."""
        if self._error is not None:
            raise RuntimeError(f"following global tables failed: {self._error}")

    def stop(self) -> None:
        """Stop following (joins the thread)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        from confluent_kafka import Consumer, KafkaError, TopicPartition

        consumer = Consumer(reader_conf(self._bootstrap, "bayou-global-tables"))
        try:
            tps = []
            for topic in sorted(self._by_topic):
                meta = consumer.list_topics(topic, timeout=15).topics[topic]
                if meta.error is not None:
                    raise RuntimeError(f"{topic}: {meta.error}")
                tps += [TopicPartition(topic, p, 0) for p in sorted(meta.partitions)]
            consumer.assign(tps)
            pending = {(tp.topic, tp.partition) for tp in tps}
            started = time.monotonic()
            while not self._stop.is_set():
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard((msg.topic() or "", msg.partition() or 0))
                        if not pending and not self._caught_up.is_set():
                            log.info(
                                "global tables caught up in %.1f s: %s",
                                time.monotonic() - started,
                                [f"{t.app}.{t.table}" for t in self.tables],
                            )
                            self._caught_up.set()
                        continue
                    if lasting(err):
                        raise RuntimeError(str(err))
                    log.warning("following global tables: %s", err)  # transient: retried
                    continue
                key = msg.key()
                if key is None:
                    continue
                for t in self._by_topic.get(msg.topic() or "", ()):
                    t.apply(key, msg.value())
        except BaseException as exc:  # reported to the loop by wait_caught_up
            self._error = exc
            log.error("following global tables failed: %s", exc)
            self._caught_up.set()
        finally:
            consumer.close()
