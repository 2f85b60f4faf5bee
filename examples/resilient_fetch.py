"""Fetch pages from a flaky server with deadlines and retries that honour Retry-After.

The "server" is a fake, in-process HTTP API (no network): some pages answer 429 Too
Many Requests with a `Retry-After` the first time, one answers 503 once, one hangs on
its first request, and one does not exist (404). The coordinator gives every request
a deadline (`item_timeout`): the hung request is cancelled and tried again. Its
`RetryPolicy` retries transient errors with exponential backoff, and waits exactly
what the server's `Retry-After` says (the error's `retry_after` attribute), capped by
`max_backoff`. A 404 is not retried. While a request waits for its next attempt its
slot is free for other pages. A proactive rate limit (`rate_limit`, with a small
burst) keeps the fetcher under the server's published limit before any 429 arrives,
and the front page goes first (`priority=-1`). For several hosts, key the work by host
(`KeyedWorkCoordinator`) and use `rate_limit_per_key`: see docs/guides/scheduling.md.

Run: python examples/resilient_fetch.py
"""

from __future__ import annotations

import asyncio
import threading
import time

from ephemeral_actors import (
    OperationTimeoutError,
    ResultCoordinator,
    RetryPolicy,
)


class HTTPError(Exception):
    """An HTTP error status (only its code; a real client's message may quote the URL)."""

    def __init__(self, status: int, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        if retry_after is not None:
            # RetryPolicy waits this long before the next attempt (capped by max_backoff).
            self.retry_after = retry_after


class TransientHTTPError(HTTPError):
    """429 and 5xx: worth another attempt."""


class FakeServer:
    """Answers like a real API having a bad day; records when each request arrived."""

    RATE_LIMITED = frozenset({"/news", "/sports", "/weather"})  # 429 + Retry-After once
    UNAVAILABLE = frozenset({"/markets"})  # 503 once
    HANGS = frozenset({"/archive"})  # the first request never answers
    MISSING = frozenset({"/missing"})  # 404 every time
    RETRY_AFTER = 0.2

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[str, list[float]] = {}

    async def get(self, path: str) -> str:
        with self.lock:
            times = self.requests.setdefault(path, [])
            times.append(time.monotonic())
            first = len(times) == 1
        await asyncio.sleep(0.01)  # network latency
        if path in self.MISSING:
            raise HTTPError(404)
        if first and path in self.RATE_LIMITED:
            raise TransientHTTPError(429, retry_after=self.RETRY_AFTER)
        if first and path in self.UNAVAILABLE:
            raise TransientHTTPError(503)
        if first and path in self.HANGS:
            await asyncio.sleep(3600)  # until the deadline cancels it
        return f"<html>{path}</html>"


PAGES = (
    "/",
    "/news",
    "/sports",
    "/weather",
    "/markets",
    "/archive",
    "/about",
    "/contact",
    "/jobs",
    "/press",
    "/privacy",
    "/terms",
    "/missing",
)


RATE = 40.0
"""Requests per second the fake server's documentation allows."""
BURST = 4


def main() -> None:
    server = FakeServer()

    async def fetch(path: str) -> str:
        return await server.get(path)

    policy = RetryPolicy(
        attempts=4,
        backoff=0.05,
        max_backoff=2.0,
        retry_on=(TransientHTTPError, OperationTimeoutError),  # not a 404
    )
    with ResultCoordinator(
        fetch,
        name="fetcher",
        max_concurrency=4,
        item_timeout=0.3,
        retry=policy,
        rate_limit=RATE,  # starts per second, retries included
        rate_burst=BURST,
    ) as fetcher:
        # The front page matters most: lower numbers start first.
        futures = {path: fetcher.submit(path, priority=-1 if path == "/" else 0) for path in PAGES}
        fetcher.complete()
        fetcher.drain(30)
        failed = [
            f"{path} ({future.exception()})"
            for path, future in futures.items()
            if future.exception() is not None
        ]
        snapshots = fetcher.get_snapshot()

    fetched = sum(1 for future in futures.values() if future.exception() is None)
    print(f"fetched {fetched} of {len(PAGES)} pages; failed: {', '.join(failed) or 'none'}")
    retried = [s.attempts for s in snapshots if s.attempts > 1]  # one record per operation
    print(f"operations retried: {len(retried)}, attempts in all: {sum(retried)}")
    gaps = [
        times[1] - times[0]
        for path, times in server.requests.items()
        if path in FakeServer.RATE_LIMITED and len(times) > 1
    ]
    honoured = len(gaps) == len(FakeServer.RATE_LIMITED) and all(
        gap >= FakeServer.RETRY_AFTER - 0.01 for gap in gaps
    )
    print(f"Retry-After honoured: {honoured}")
    print(f"timed-out request retried: {len(server.requests['/archive']) == 2}")
    starts = sorted(t for times in server.requests.values() for t in times)
    # burst + rate x t in any window of t seconds (a little slack for timer jitter).
    kept = all(
        j - i + 1 <= BURST + RATE * (starts[j] - starts[i]) + 1
        for i in range(len(starts))
        for j in range(i, len(starts))
    )
    print(f"rate limit kept: {kept}")


if __name__ == "__main__":
    main()
