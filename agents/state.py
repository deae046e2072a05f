"""The demo agent's local state in RocksDB (rocksdict): open windows, alert times, offsets.

Everything a batch changed is written in one atomic ``WriteBatch`` (never per record), together
with the next input offset of every partition the batch covered. A restarted worker therefore
finds state and "input folded so far" that agree: records Kafka redelivers because the worker
died between this write and its offset commit are recognised and skipped, so no window counts a
reading twice.

The store is local to one worker (no changelog topic): when a partition moves to another worker,
its open windows do not follow it. Give each worker its own ``state_dir``; RocksDB locks it.

Keys (bytes; values are UTF-8 text):
- ``w:<start>\\0<device>`` → JSON ``[count, sum, min, max]`` of an open window
- ``a:<device>`` → event time of the device's last alert
- ``m:watermark`` → the aggregator's watermark
- ``o:<partition>\\0<topic>`` → next input offset already folded into the state
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

from agents.windows import WindowKey, WindowStats

_W = b"w:"
_A = b"a:"
_O = b"o:"
_WATERMARK = b"m:watermark"

TopicPartitionKey = tuple[str, int]


class StateStore:
    """A RocksDB directory holding the demo agent's state."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        # raw_mode: keys and values are plain bytes, readable by any RocksDB tool.
        self._db = Rdict(str(path), Options(raw_mode=True))
        self._closed = False

    def _scan(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        for key, value in self._db.items(from_key=prefix):
            # raw_mode yields bytes; the isinstance checks also narrow rocksdict's union type.
            if not isinstance(key, bytes) or not key.startswith(prefix):
                break
            if isinstance(value, bytes):
                out.append((key[len(prefix) :], value))
        return out

    def load_windows(self) -> dict[WindowKey, WindowStats]:
        """Every open window."""
        out: dict[WindowKey, WindowStats] = {}
        for rest, value in self._scan(_W):
            start, _, device = rest.partition(b"\0")
            out[(device.decode(), float(start))] = WindowStats.from_list(json.loads(value))
        return out

    def load_alerts(self) -> dict[str, float]:
        """Every device's last alert time."""
        return {rest.decode(): float(value) for rest, value in self._scan(_A)}

    def load_offsets(self) -> dict[TopicPartitionKey, int]:
        """Per input partition, the next offset already folded into the state."""
        out: dict[TopicPartitionKey, int] = {}
        for rest, value in self._scan(_O):
            partition, _, topic = rest.partition(b"\0")
            out[(topic.decode(), int(partition))] = int(value)
        return out

    def load_watermark(self) -> float:
        """The saved watermark, or -inf."""
        raw = self._db.get(_WATERMARK)
        return -math.inf if raw is None else float(raw)

    def write(
        self,
        windows: dict[WindowKey, WindowStats | None],
        alerts: dict[str, float],
        watermark: float,
        offsets: dict[TopicPartitionKey, int],
    ) -> None:
        """Write one batch's changes atomically; a None window means it closed (delete it)."""
        if not windows and not alerts and not offsets and watermark == -math.inf:
            return
        wb = WriteBatch(raw_mode=True)
        for (device, start), stats in windows.items():
            key = _W + repr(start).encode() + b"\0" + device.encode()
            if stats is None:
                wb.delete(key)
            else:
                wb.put(key, json.dumps(stats.to_list()).encode())
        for device, ts in alerts.items():
            wb.put(_A + device.encode(), repr(ts).encode())
        for (topic, partition), offset in offsets.items():
            wb.put(_O + str(partition).encode() + b"\0" + topic.encode(), str(offset).encode())
        if watermark != -math.inf:
            wb.put(_WATERMARK, repr(watermark).encode())
        self._db.write(wb)

    def close(self) -> None:
        """Flush and close the database (idempotent)."""
        if not self._closed:
            self._closed = True
            self._db.close()
