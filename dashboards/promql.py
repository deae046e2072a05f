"""PromQL fragments the dashboards repeat: rates and quantiles over Grafana's rate interval."""

from __future__ import annotations

RATE = "$__rate_interval"


def selector(name: str, matchers: str = "") -> str:
    """``name{matchers}`` (no braces without matchers)."""
    return f"{name}{{{matchers}}}" if matchers else name


def rate_sum(name: str, by: str = "", matchers: str = "") -> str:
    """Per-second rate of counter ``name``, summed (``by`` labels kept)."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({selector(name, matchers)}[{RATE}]))"


def quantile(q: float, histogram: str, by: str = "", matchers: str = "") -> str:
    """The ``q`` quantile of ``histogram`` over the rate interval (``by`` labels kept)."""
    labels = f"{by}, le" if by else "le"
    bucket = selector(histogram + "_bucket", matchers)
    return f"histogram_quantile({q}, sum by ({labels}) (rate({bucket}[{RATE}])))"
