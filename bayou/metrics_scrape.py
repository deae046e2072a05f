"""Reading a Prometheus ``/metrics`` endpoint: samples by name and labels.

The text is parsed with ``prometheus_client.parser`` (the exposition format's own parser, not
line splitting), so HELP/TYPE lines, labels with spaces or escapes, and ``_created`` samples
never pass for another metric. ``bayou up`` waits on it for readiness; tests and benchmarks
read figures with it.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable, Mapping

from prometheus_client.parser import text_string_to_metric_families

_Key = tuple[str, frozenset[tuple[str, str]]]


class Samples:
    """The samples of one scrape, looked up by sample name (``..._total``, ``..._sum``, ...)
    and exact label set."""

    def __init__(self, text: str) -> None:
        self._values: dict[_Key, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self._values[(s.name, frozenset(s.labels.items()))] = float(s.value)

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """The sample ``name`` with exactly ``labels`` (none by default), or None."""
        return self._values.get((name, frozenset((labels or {}).items())))

    def values(self, names: Iterable[str]) -> dict[str, float]:
        """The unlabelled samples among ``names`` that are there, by name."""
        return {n: v for n in names if (v := self.value(n)) is not None}

    def total(self, name: str) -> float | None:
        """The sum of every sample named ``name`` whatever its labels, or None if none."""
        found = [v for (n, _), v in self._values.items() if n == name]
        return sum(found) if found else None

    def labelled(self, name: str) -> list[tuple[dict[str, str], float]]:
        """Every sample named ``name``: (its labels, its value)."""
        return [(dict(lbl), v) for (n, lbl), v in self._values.items() if n == name]


def scrape(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> Samples | None:
    """The samples at ``http://host:port/metrics``; None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as r:
            text = r.read().decode()
    except OSError:
        return None
    return Samples(text)


def metric_value(
    port: int,
    name: str,
    labels: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    timeout: float = 2.0,
) -> float | None:
    """One sample's value from ``http://host:port/metrics`` (exact labels), or None."""
    samples = scrape(port, host, timeout)
    return None if samples is None else samples.value(name, labels)


def metric_total(
    port: int, name: str, host: str = "127.0.0.1", timeout: float = 2.0
) -> float | None:
    """The sum of the samples ``name`` over all their labels at ``http://host:port/metrics``."""
    samples = scrape(port, host, timeout)
    return None if samples is None else samples.total(name)
