"""The worker's follower of global tables: reads the owning apps' changelogs on a thread of its
own into the :class:`agents.global_tables.GlobalTable` views (see that module for the contract)."""

from __future__ import annotations

import logging
import threading
import time

from agents.global_tables import GlobalTable
from kafkaio.reader import BEGINNING, PartitionReader
from kafkaio.security import PLAINTEXT, KafkaSecurity

log = logging.getLogger(__name__)

CATCH_UP_TIMEOUT_S = 60.0


class Follower:
    """Reads the changelogs of some global tables into them on a thread of its own."""

    def __init__(
        self, bootstrap: str, tables: list[GlobalTable], *, security: KafkaSecurity = PLAINTEXT
    ) -> None:
        self.tables = tables
        self._by_topic: dict[str, list[GlobalTable]] = {}
        for t in tables:
            self._by_topic.setdefault(t.changelog, []).append(t)
        self._bootstrap = bootstrap
        self._security = security
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
        reader = PartitionReader(
            self._bootstrap, "global-tables", security=self._security, read_committed=True
        )
        try:
            tps = reader.partitions(sorted(self._by_topic))
            reader.assign(dict.fromkeys(tps, BEGINNING))
            pending = set(tps)
            started = time.monotonic()
            while not self._stop.is_set():
                polled = reader.poll(0.2)
                for rec in polled.records:
                    if rec.key is not None:
                        for t in self._by_topic.get(rec.topic, ()):
                            t.apply(rec.key, rec.value)
                if polled.ends and not self._caught_up.is_set():
                    pending -= polled.ends.keys()
                    if not pending:
                        log.info(
                            "global tables caught up in %.1f s: %s",
                            time.monotonic() - started,
                            [f"{t.app}.{t.table}" for t in self.tables],
                        )
                        self._caught_up.set()
        except BaseException as exc:  # reported to the loop by wait_caught_up
            self._error = exc
            log.error("following global tables failed: %s", exc)
            self._caught_up.set()
        finally:
            reader.close()
