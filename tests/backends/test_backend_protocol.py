"""The Backend protocol: custom backends, the in-process default, option checks, lazy imports."""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import ephemeral_actors.backends as backends
from ephemeral_actors import (
    CoordinatorOptions,
    KeyedWorkCoordinator,
    OperationCancelledError,
    ResultCoordinator,
    WorkCoordinator,
    current_operation,
)
from ephemeral_actors.backends import Backend, InProcessBackend
from tests.conftest import WAIT


class ExecutorBackend:
    """A custom backend: bodies run on a thread pool it owns, not on the coordinator's workers.

    The wrapped callable runs on a coordinator worker thread with the operation
    current; it hands the body to the pool, relays the body's signals and the
    operation's cancellation, and blocks until the outcome is back.
    """

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="executor-backend")
        self.wrapped: list[tuple[str, bool]] = []

    def wrap(self, body: Callable[[Any], Any], *, is_async: bool) -> Callable[[Any], Any]:
        self.wrapped.append((getattr(body, "__name__", "?"), is_async))

        def run_there(item: Any, cancelled: threading.Event, signals: list[str]) -> Any:
            if is_async:
                return asyncio.run(body((item, cancelled, signals)))
            return body((item, cancelled, signals))

        def wrapped(item: Any) -> Any:
            op = current_operation()  # the wrapped callable runs inside the body context
            cancelled = threading.Event()
            signals: list[str] = []
            future = self.pool.submit(run_there, item, cancelled, signals)
            while not future.done():
                if op.cancelled:
                    cancelled.set()
                time.sleep(0.005)
            for name in signals:
                op.signal(name)
            try:
                return future.result()
            except InterruptedError:
                raise OperationCancelledError(f"operation {op.id} cancelled remotely") from None

        return wrapped

    def close(self) -> None:
        self.pool.shutdown(wait=True)


@pytest.fixture
def executor_backend() -> Iterator[ExecutorBackend]:
    backend = ExecutorBackend()
    yield backend
    backend.close()


@pytest.fixture
def make() -> Iterator[Callable[..., Any]]:
    made: list[Any] = []

    def factory(kind: type, *args: Any, **options: Any) -> Any:
        c = kind(*args, CoordinatorOptions(**options))
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close(timeout=WAIT)


def run_all(c: Any, items: Any) -> list[int]:
    ids = [c.enqueue(i) for i in items]
    c.complete()
    c.drain(WAIT)
    return ids


def remote_square(packed: tuple[int, threading.Event, list[str]]) -> tuple[int, str]:
    item, _cancelled, signals = packed
    signals.append(f"squared.{item}")
    if item < 0:
        raise ArithmeticError(f"negative {item}")
    return item * item, threading.current_thread().name


async def remote_square_async(packed: tuple[int, threading.Event, list[str]]) -> int:
    item, _cancelled, _signals = packed
    await asyncio.sleep(0)
    return item * item


def remote_wait_for_cancel(packed: tuple[int, threading.Event, list[str]]) -> None:
    _item, cancelled, _signals = packed
    if not cancelled.wait(WAIT):
        raise AssertionError("never cancelled")
    raise InterruptedError


# -- a custom backend ------------------------------------------------------------------------


def test_a_custom_backend_satisfies_the_protocol(executor_backend):
    """Any object with a matching wrap() is a Backend."""
    assert isinstance(executor_backend, Backend)
    assert isinstance(InProcessBackend(), Backend)
    assert not isinstance(object(), Backend)


def test_a_custom_backend_runs_bodies_on_its_own_threads(make, executor_backend):
    """Bodies run where the backend puts them; results come back to the coordinator."""
    c = make(ResultCoordinator, remote_square, max_concurrency=4, backend=executor_backend)
    run_all(c, range(5))
    results = c.get_results()
    assert sorted(r[0] for r in results) == [0, 1, 4, 9, 16]
    assert all(r[1].startswith("executor-backend") for r in results)
    assert executor_backend.wrapped == [("remote_square", False)]


def test_a_custom_backend_reports_failures_and_signals(make, executor_backend):
    """The body's exception fails the op with its type; relayed signals land on the op."""
    c = make(ResultCoordinator, remote_square, backend=executor_backend)
    ids = run_all(c, [-2, 3])
    failed = {s.id: s for s in c.get_failed()}
    assert set(failed) == {ids[0]}
    assert type(failed[ids[0]].error) is ArithmeticError
    assert str(failed[ids[0]].error) == "negative -2"
    assert [s.signals for s in c.get_snapshot()] == [("squared.-2",), ("squared.3",)]


def test_a_custom_backend_gets_coroutine_bodies_with_is_async(make, executor_backend):
    """A coroutine body reaches wrap() with is_async=True and the wrapped callable runs it."""
    c = make(ResultCoordinator, remote_square_async, max_concurrency=2, backend=executor_backend)
    run_all(c, range(4))
    assert sorted(c.get_results()) == [0, 1, 4, 9]
    assert executor_backend.wrapped == [("remote_square_async", True)]


def test_a_custom_backend_sees_cancellation(make, executor_backend):
    """cancel() reaches the wrapped callable through current_operation().cancelled."""
    c = make(WorkCoordinator, remote_wait_for_cancel, backend=executor_backend)
    c.enqueue(1)
    deadline = time.monotonic() + WAIT
    while c.active_count == 0:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    c.cancel()
    c.drain(WAIT)
    assert c.total_cancelled == 1
    assert c.total_failed == 0


def test_keyed_coordinators_wrap_the_body_not_the_key_selector(make, executor_backend):
    """Only the body goes to the backend; the key selector runs locally at enqueue."""
    c = make(KeyedWorkCoordinator, lambda x: x % 2, remote_square, backend=executor_backend)
    run_all(c, range(4))
    assert c.total_completed == 4
    assert executor_backend.wrapped == [("remote_square", False)]


# -- the default -------------------------------------------------------------------------------


def test_in_process_backend_returns_the_body_unchanged():
    """InProcessBackend.wrap hands the body back: the coordinator runs it itself."""

    def body(x: int) -> int:
        return x

    assert InProcessBackend().wrap(body, is_async=False) is body
    assert repr(InProcessBackend()) == "InProcessBackend()"


def test_an_explicit_in_process_backend_behaves_like_the_default(make):
    """backend=InProcessBackend() runs sync bodies on workers and coroutines on the loop."""

    async def body(x: int) -> tuple[int, str]:
        await asyncio.sleep(0)
        return x, threading.current_thread().name

    c = make(ResultCoordinator, body, backend=InProcessBackend())
    run_all(c, range(3))
    results = c.get_results()
    assert sorted(r[0] for r in results) == [0, 1, 2]
    assert all(r[1] == "ephemeral-actors-shared-loop" for r in results)


# -- option checks -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [object(), "ray", 42])
def test_a_non_backend_in_options_raises_type_error(bad):
    """CoordinatorOptions(backend=...) rejects anything without a wrap() method."""
    with pytest.raises(TypeError, match="backend must implement"):
        CoordinatorOptions(backend=bad)


def test_none_means_the_in_process_default():
    """backend=None is the default and is accepted."""
    assert CoordinatorOptions().backend is None
    assert CoordinatorOptions(backend=None).backend is None


# -- lazy optional backends ---------------------------------------------------------------------


def test_ray_backend_without_ray_raises_import_error_naming_the_extra(monkeypatch):
    """Asking for RayBackend when Ray is missing says which extra to install."""
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    monkeypatch.delitem(sys.modules, "ephemeral_actors.backends._ray", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'ephemeral_actors\[ray\]'") as caught:
        from ephemeral_actors.backends import RayBackend  # noqa: F401, PLC0415 - the import is the test
    assert caught.value.name == "ray"
    with pytest.raises(ImportError, match="ephemeral_actors"):
        _ = backends.RayBackend


def test_an_unrelated_import_error_is_not_blamed_on_the_extra(monkeypatch):
    """If Ray is present but something else fails to import, that error is raised as is."""
    pytest.importorskip("ray", reason="needs Ray installed to get past 'import ray'")
    monkeypatch.setitem(sys.modules, "ephemeral_actors._validate", None)
    monkeypatch.delitem(sys.modules, "ephemeral_actors.backends._ray", raising=False)
    with pytest.raises(ImportError) as caught:
        _ = backends.RayBackend
    assert caught.value.name == "ephemeral_actors._validate"
    assert "pip install" not in str(caught.value)


def test_unknown_backend_names_raise_attribute_error():
    """Only known names are importable lazily; anything else is an AttributeError."""
    with pytest.raises(AttributeError, match="NoSuchBackend"):
        _ = backends.NoSuchBackend
    assert "RayBackend" in dir(backends)
    assert "RayBackend" not in backends.__all__  # star imports never need the extra


def test_ray_backend_imports_lazily_when_ray_is_installed():
    """With Ray installed, RayBackend imports by name and builds without touching Ray."""
    pytest.importorskip("ray", reason="Ray is not installed")
    module = importlib.import_module("ephemeral_actors.backends._ray")
    assert backends.RayBackend is module.RayBackend
