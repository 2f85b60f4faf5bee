"""Job 2: a long-lived queue: jobs arrive over time, at most 4 run at once, failures counted.

Each function is one peer's way; each returns `(sent, failed)`. The docs page
"Coming from concurrent.futures / asyncio.TaskGroup / aiometer" shows them side by
side (tests/test_coming_from.py runs this file).
"""

from __future__ import annotations

import asyncio
import threading
import time


def send(message: str) -> None:
    """Stands in for sending an email; messages containing "bounce" fail."""
    time.sleep(0.001)
    if "bounce" in message:
        raise ConnectionError("550 mailbox unavailable")


async def asend(message: str) -> None:
    """The awaitable twin of `send`."""
    await asyncio.sleep(0.001)
    if "bounce" in message:
        raise ConnectionError("550 mailbox unavailable")


# --8<-- [start:futures]
def with_thread_pool(messages: list[str]) -> tuple[int, int]:
    from concurrent.futures import Future, ThreadPoolExecutor

    failed = 0
    lock = threading.Lock()

    def count_failure(future: Future[None]) -> None:
        nonlocal failed
        if future.exception() is not None:
            with lock:
                failed += 1

    pool = ThreadPoolExecutor(max_workers=4)  # its queue has no bound: no backpressure
    for message in messages:  # ... as they arrive, for as long as the service runs
        pool.submit(send, message).add_done_callback(count_failure)
    pool.shutdown(wait=True)  # at shutdown
    return len(messages) - failed, failed


# --8<-- [end:futures]


# --8<-- [start:taskgroup]
async def with_task_group(messages: list[str]) -> tuple[int, int]:
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=200)  # backpressure for put()
    sent = failed = 0

    async def worker() -> None:
        nonlocal sent, failed
        while True:
            message = await queue.get()
            try:
                await asend(message)
                sent += 1
            except Exception:  # one failure must not end the worker (or the group)
                failed += 1
            finally:
                queue.task_done()

    async with asyncio.TaskGroup() as group:
        workers = [group.create_task(worker()) for _ in range(4)]
        for message in messages:  # ... as they arrive
            await queue.put(message)
        await queue.join()  # at shutdown: wait for the backlog, then stop the workers
        for task in workers:
            task.cancel()
    return sent, failed


# --8<-- [end:taskgroup]


# --8<-- [start:aiometer]
async def with_aiometer(messages: list[str]) -> tuple[int, int]:
    import aiometer

    # aiometer schedules a batch known up front; a queue that stays open is yours
    # to build (as with TaskGroup). Failures must be caught in the job, or the first
    # one cancels the rest.
    failed = 0

    async def send_counting(message: str) -> None:
        nonlocal failed
        try:
            await asend(message)
        except ConnectionError:
            failed += 1

    await aiometer.run_on_each(send_counting, messages, max_at_once=4)
    return len(messages) - failed, failed


# --8<-- [end:aiometer]


# --8<-- [start:ephemeral]
def with_ephemeral_actors(messages: list[str]) -> tuple[int, int]:
    from ephemeral_actors import WorkCoordinator

    emails = WorkCoordinator(send, max_concurrency=4, name="emails")
    for message in messages:  # ... as they arrive; blocks while 200 are pending
        emails.enqueue(message)
    emails.complete()  # at shutdown: no more intake,
    emails.drain()  # wait for the backlog,
    emails.close()  # and stop the actors
    # Failures are counted and kept (type, id, timing; never the message) for a while.
    assert all(isinstance(op.error, ConnectionError) for op in emails.get_failed())
    return emails.total_completed, emails.total_failed


# --8<-- [end:ephemeral]


def main() -> None:
    messages = [f"hello {n}" if n % 10 else f"bounce {n}" for n in range(40)]
    expected = (36, 4)
    assert with_thread_pool(messages) == expected
    assert asyncio.run(with_task_group(messages)) == expected
    assert with_ephemeral_actors(messages) == expected
    print("long-lived queue: all agree")


if __name__ == "__main__":
    main()
