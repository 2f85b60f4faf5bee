"""A small web crawler: work that makes work, on your own event loop.

    python examples/crawler.py

* The body is `async def` and runs on `main()`'s event loop (the coordinator is made
  inside it), so it can use objects bound to that loop: here an `asyncio.Semaphore`
  and the client; in a real crawler, one shared `httpx.AsyncClient`.
* Items are keyed by host: each host gets at most 2 requests at once, and a slow
  host never holds up the others.
* Bodies enqueue the links they find back into their own coordinator. That never
  waits for backlog space (the bodies are the ones who would free it), so a full
  backlog cannot deadlock the crawl.
* A `429` answer emits the `rate-limit` signal, which defers new requests for a
  moment (`defer_on_signals`).
* `wait_idle()` (like `queue.Queue.join()`) finds the end with intake still open, so
  the stats are read inside the block; the block's end alone would also wait for
  every page, since bodies may enqueue while their coordinator completes.
* `describe=str` labels every operation with its URL, so the failures listed at the
  end say which page failed, even after the window trimmed them.

The site is fake (a dict), so the example runs anywhere without a network; swap
`FakeClient` for `httpx.AsyncClient` to crawl for real.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

from ephemeral_actors import KeyedWorkCoordinator, current_operation

HOSTS = ("a.example", "b.example", "c.example")


def fake_site() -> dict[str, tuple[int, tuple[str, ...]]]:
    """URL -> (status, links): 3 hosts of 20 pages, linked in a chain and across hosts."""
    pages: dict[str, tuple[int, tuple[str, ...]]] = {}
    for h, host in enumerate(HOSTS):
        for n in range(20):
            links = [f"https://{host}/{n + 1}"] if n < 19 else []
            links.append(f"https://{host}/{(3 * n + 5) % 20}")  # a jump ahead
            links.append(f"https://{HOSTS[(h + 1) % len(HOSTS)]}/{n}")  # across hosts
            status = 200
            if n == 7:
                status = 404
            elif n == 13 and host == "b.example":
                status = 500
            elif n == 4 and host == "c.example":
                status = 429
            pages[f"https://{host}/{n}"] = (status, tuple(links))
    return pages


class HTTPError(Exception):
    """A page answered with an error status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


@dataclass
class Response:
    """What `FakeClient.get` answers."""

    status: int
    links: tuple[str, ...]


class FakeClient:
    """Stands in for `httpx.AsyncClient`; like it, it belongs to the loop it was made on."""

    def __init__(self, site: dict[str, tuple[int, tuple[str, ...]]]) -> None:
        self.site = site
        # Bound to the running loop on first use: a body on another loop would fail.
        self.connections = asyncio.Semaphore(8)

    async def get(self, url: str) -> Response:
        async with self.connections:
            await asyncio.sleep(0.001)
            status, links = self.site.get(url, (404, ()))
            return Response(status, links)


def host_of(url: str) -> str:
    """The key: one queue per host."""
    return urlsplit(url).netloc


async def main() -> None:
    """Crawl the fake site from its first page and report what failed."""
    client = FakeClient(fake_site())
    seen: set[str] = set()  # only touched on this loop: the bodies run here too

    async def fetch(url: str) -> None:
        response = await client.get(url)
        if response.status == 429:
            current_operation().signal("rate-limit")
        if response.status != 200:
            raise HTTPError(response.status)
        for link in response.links:
            if link not in seen:
                seen.add(link)
                await crawler.enqueue_async(link)

    crawler = KeyedWorkCoordinator(
        host_of,
        fetch,
        max_concurrency=6,
        max_concurrency_per_key=2,
        max_tracked_operations=10,  # a small backlog: bodies still never wait for it
        describe=str,
        defer_on_signals="rate-limit",
        defer_check_interval=0.01,
        max_defer_attempts=3,
        name="crawler",
    )
    async with crawler:
        start = f"https://{HOSTS[0]}/0"
        seen.add(start)
        await crawler.enqueue_async(start)
        await crawler.wait_idle_async()
        stats = crawler.stats()
        failed = crawler.get_failed()
    print(
        f"crawled {stats.total_enqueued} pages: {stats.total_completed} ok, "
        f"{stats.total_failed} failed"
    )
    for snapshot in failed:
        print(f"  failed: {snapshot.label} ({snapshot.error})")
    print(f"rate limit seen: {any(s.has_signal('rate-limit') for s in failed)}")


if __name__ == "__main__":
    asyncio.run(main())
