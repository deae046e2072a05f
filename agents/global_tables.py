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
from collections.abc import Iterator, Mapping
from typing import Any

_CHANGELOG_PREFIX = "bayou.changelog."


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
