"""Signals across coordinators on a shared bus: defer on a rate limit, cancel on overload.

`api-sync` calls an API that answers 429 after its 12th request, for 0.3 s. A body
that gets a 429 emits `rate-limit`, which defers the rest of the queue until a watchdog
sees the API healthy and emits `rate-limit.cleared` on the shared bus. `reports` is
low-priority batch work: an `overload` signal on the same bus cancels its backlog.

Run: python examples/signals_rate_limit.py
"""

from __future__ import annotations

import threading
import time

from ephemeral_actors import CoordinatorOptions, SignalBus, WorkCoordinator, current_operation


class FakeApi:
    def __init__(self) -> None:
        self.calls: list[float] = []  # start time of every request
        self.limited_until = 0.0
        self.lock = threading.Lock()

    def get(self, _request: int) -> int:
        with self.lock:
            self.calls.append(now := time.monotonic())
            if len(self.calls) == 12:
                self.limited_until = now + 0.3
            return 429 if now < self.limited_until else 200

    def healthy(self) -> bool:
        return time.monotonic() >= self.limited_until


def main() -> None:
    api, bus, limited = FakeApi(), SignalBus(name="ops"), threading.Event()
    bus.subscribe("rate-limit", lambda _event: limited.set())  # runs inside emit(): no blocking

    def watchdog() -> None:
        limited.wait()
        while not api.healthy():  # probe the API's health endpoint until the limit resets
            time.sleep(0.02)
        bus.emit("rate-limit.cleared")

    def call_api(request: int) -> None:
        time.sleep(0.01)  # network latency
        if api.get(request) == 429:
            current_operation().signal("rate-limit")  # the queue is deferred when this returns
            raise RuntimeError(f"429 Too Many Requests for request {request}")

    def build_report(_n: int) -> None:
        for _step in range(5):
            current_operation().raise_if_cancelled()  # cancellation is cooperative
            time.sleep(0.005)

    api_options = CoordinatorOptions(
        name="api-sync",
        max_concurrency=2,
        signals=bus,
        defer_on_signals="rate-limit",
        resume_on_signals="rate-limit.cleared",
        defer_check_interval=0.05,
        max_defer_attempts=100,  # with no clear at all, deferred work runs after ~5 s
    )
    report_options = CoordinatorOptions(
        name="reports", max_concurrency=1, signals=bus, cancel_on_signals="overload"
    )
    guard = threading.Thread(target=watchdog, name="watchdog")
    guard.start()
    with bus, WorkCoordinator(call_api, api_options) as api_sync:
        with WorkCoordinator(build_report, report_options) as reports:
            reports.enqueue_many(range(20))
            api_sync.enqueue_many(range(30))
            while reports.total_completed < 3:  # a load monitor decides to shed load
                time.sleep(0.005)
            bus.emit("overload")  # cancels the reports backlog, not the API calls
        guard.join()

    s, failed = api_sync.stats(), api_sync.get_failed()
    gap = max(b - a for a, b in zip(api.calls, api.calls[1:], strict=False))
    print(f"api-sync: {s.total_completed} completed, {s.total_failed} got 429 {failed[0].signals}")
    print(f"api-sync: queue deferred {gap:.2f} s until 'rate-limit.cleared'")
    r, errors = reports.stats(), [type(op.error).__name__ for op in reports.get_failed()]
    print(
        f"reports: {r.total_completed} completed, {r.total_cancelled} cancelled: "
        f"{errors.count('SignalCancelledError')} SignalCancelledError('overload') "
        f"+ {errors.count('OperationCancelledError')} running body that saw the request"
    )
    print("signals on the bus:", [e.signal for e in bus.sense()])


if __name__ == "__main__":
    main()
