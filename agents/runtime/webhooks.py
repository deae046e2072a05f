"""HTTP webhook calls of apps (``ctx.webhook``): POST with retries, then a dead letter.

The worker (:mod:`agents.runtime.loop`) makes a batch's calls after the batch's Kafka outputs
are acknowledged and before its state reaches the changelog and its input offsets are
committed; they run concurrently (at most ``concurrency`` at once), so a batch waits at most
the slowest call: ``(retries + 1) * timeout`` plus the backoff waits ``backoff * (1 + 2 + ...
+ 2**(retries - 1))`` (defaults: 3 tries of at most 5 s, waits 0.5 s and 1 s: under 17 s).
That is at-least-once: a worker that dies before the commit runs the input again and calls
again, with the same ``Bayou-Result-Id`` header, so a receiver can drop the repeat.

A try fails on a connection error, a timeout, or an HTTP status other than 2xx. Connection
errors, timeouts, 408, 429 and 5xx are tried again after ``backoff * 2**n`` seconds; another
status (a 4xx, a redirect: redirects are not followed) is final at once. A call whose last try
failed is written to the dead-letter topic: value the request body, headers ``bayou.error``
(why), ``bayou.webhook_url``, ``bayou.webhook_tries``, ``bayou.webhook_status`` (the last HTTP
status, when there was one), ``bayou.agent`` and ``bayou.result_id``. The request headers are
not written (they often hold credentials).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from agents.app import Output
from ingress.contract import H_DEADLETTER_AGENT, H_DEADLETTER_REASON, H_RESULT_ID, Headers

log = logging.getLogger(__name__)

H_WEBHOOK_URL = "bayou.webhook_url"
H_WEBHOOK_TRIES = "bayou.webhook_tries"
H_WEBHOOK_STATUS = "bayou.webhook_status"
RESULT_ID_HEADER = "Bayou-Result-Id"

_RETRY_STATUS = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """How one call ended."""

    output: Output
    ok: bool
    tries: int
    reason: str = ""
    status: int | None = None


class WebhookCaller:
    """Makes apps' webhook calls over one HTTP connection pool."""

    def __init__(
        self,
        retries: int = 2,
        timeout: float = 5.0,
        backoff: float = 0.5,
        concurrency: int = 100,
    ) -> None:
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff
        self._sem = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call_all(self, outputs: Sequence[Output]) -> list[WebhookResult]:
        """Make every call concurrently; the results in the same order."""
        if not outputs:
            return []
        return list(await asyncio.gather(*(self.call(o) for o in outputs)))

    async def call(self, o: Output) -> WebhookResult:
        """POST ``o.payload`` to ``o.topic`` with retries (module docs)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        retries = self.retries if o.retries is None else o.retries
        timeout = self.timeout if o.timeout is None else o.timeout
        headers = {"Content-Type": "application/json", RESULT_ID_HEADER: o.result_id}
        headers.update(dict(o.headers))
        reason, status = "", None
        tries = 0
        async with self._sem:
            for attempt in range(retries + 1):
                if attempt:
                    await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
                tries += 1
                retry = True
                try:
                    async with self._session.post(
                        o.topic,
                        data=o.payload,
                        headers=headers,
                        timeout=aiohttp.ClientTimeout(total=timeout),
                        allow_redirects=False,
                    ) as resp:
                        status = resp.status
                        await resp.read()
                    if 200 <= status < 300:
                        return WebhookResult(o, True, tries, status=status)
                    reason = f"HTTP {status}"
                    retry = status in _RETRY_STATUS or status >= 500
                except TimeoutError:
                    reason, status = f"timed out after {timeout:g} s", None
                except aiohttp.ClientError as exc:
                    reason, status = f"{type(exc).__name__}: {exc}", None
                if not retry:
                    break
        why = f"webhook POST {o.topic} failed after {tries} tr{'y' if tries == 1 else 'ies'}: "
        why = (why + reason).replace("\n", " ")[:500]
        log.warning("%s (%s)", why, o.agent)
        return WebhookResult(o, False, tries, why, status)


def dead_letter(result: WebhookResult) -> tuple[bytes | None, bytes, Headers]:
    """The dead-letter record of a failed call: key, value (the body) and headers."""
    o = result.output
    headers: Headers = [
        (H_DEADLETTER_REASON, result.reason.encode()),
        (H_WEBHOOK_URL, o.topic.encode()),
        (H_WEBHOOK_TRIES, str(result.tries).encode()),
    ]
    if result.status is not None:
        headers.append((H_WEBHOOK_STATUS, str(result.status).encode()))
    headers += [(H_DEADLETTER_AGENT, o.agent.encode()), (H_RESULT_ID, o.result_id.encode())]
    return o.key, o.payload, headers
