"""Quickstart: fire-and-forget threads replaced by a bounded, observable coordinator.

Before: `threading.Thread(target=send_welcome_email, args=(a,)).start()` for each
address, with no limit, no visibility and no idea whether it worked. After: the same
work at most 8 at a time, with counters and failures to look at.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import time

from ephemeral_actors import CoordinatorOptions, WorkCoordinator


class UndeliverableError(ValueError):
    """The mail server refused the address."""


def send_welcome_email(address: str) -> None:
    time.sleep(0.01)  # stands in for talking to the mail server
    if address.endswith(".invalid"):
        raise UndeliverableError(f"no such domain: {address.split('@')[1]}")


def main() -> None:
    new_signups = [f"user{n}@example.com" for n in range(40)]
    new_signups[7] = "ghost@nowhere.invalid"
    new_signups[23] = "typo@exmaple.invalid"

    options = CoordinatorOptions(max_concurrency=8, name="welcome-emails")
    with WorkCoordinator(send_welcome_email, options) as emails:
        for address in new_signups:
            emails.enqueue(address)  # blocks while 200 are waiting (backpressure)
        running = emails.stats()
        print(f"while running: {running.pending_count} pending, {running.active_count} active")
    # Leaving the block: stop intake, wait for every item, stop every thread.

    stats = emails.stats()  # still answers after close, with the final state
    print(f"{stats.total_completed} sent, {stats.total_failed} failed")
    for op in emails.get_failed():
        print(f"  op {op.id}: {op.error!r} after {op.duration:.3f} s")
    assert stats.total_enqueued == stats.total_completed + stats.total_failed


if __name__ == "__main__":
    main()
