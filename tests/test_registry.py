"""CoordinatorRegistry: lazy named coordinators, one instance per name, close (SPEC section 11)."""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from typing import TYPE_CHECKING, Any

import pytest

from ephemeral_actors import (
    CoordinatorKey,
    CoordinatorOptions,
    RegistryClosedError,
    ResultCoordinator,
    UnknownCoordinatorError,
    WorkCoordinator,
)
from ephemeral_actors._registry import CoordinatorRegistry
from ephemeral_actors.testing import library_threads
from tests.conftest import WAIT

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ephemeral_actors._coordinators._base import CoordinatorBase


def noop(_item: Any) -> None:
    """A body that does nothing."""


class CountingCondition(threading.Condition):
    """A Condition that counts threads that started waiting, so tests can wait for them.

    Installed as the registry's private condition, it makes "N threads are now blocked
    in get()/close()" observable without sleeping.
    """

    def __init__(self) -> None:
        super().__init__(threading.Lock())
        self.waits = 0
        self._seen = threading.Condition()

    def wait(self, timeout: float | None = None) -> bool:
        with self._seen:
            self.waits += 1
            self._seen.notify_all()
        return super().wait(timeout)

    def wait_for_waiters(self, count: int) -> None:
        with self._seen:
            assert self._seen.wait_for(lambda: self.waits >= count, WAIT), "waiters never came"


class Recording(WorkCoordinator[Any]):
    """A WorkCoordinator that records the order in which coordinators are closed."""

    def __init__(self, label: str, log: list[str]) -> None:
        super().__init__(noop)
        self.label = label
        self.log = log

    def close(self, timeout: float | None = None) -> None:
        self.log.append(self.label)
        super().close(timeout)


@pytest.fixture
def registry() -> Iterator[CoordinatorRegistry]:
    r = CoordinatorRegistry()
    yield r
    r.close(WAIT)


def counting_factory(
    calls: list[CoordinatorRegistry],
) -> Callable[[CoordinatorRegistry], WorkCoordinator[Any]]:
    def factory(r: CoordinatorRegistry) -> WorkCoordinator[Any]:
        calls.append(r)
        return WorkCoordinator(noop)

    return factory


# -- lookup ----------------------------------------------------------------------------


def test_factory_runs_only_on_first_get(registry):
    """Registering builds nothing; the first get() calls the factory with the registry."""
    calls: list[CoordinatorRegistry] = []
    registry.register("jobs", counting_factory(calls))
    assert calls == []
    assert registry.created == ()
    assert "jobs" in registry
    c = registry.get("jobs")
    assert calls == [registry]
    assert isinstance(c, WorkCoordinator)
    assert registry.created == ("jobs",)


def test_same_name_returns_same_instance(registry):
    """Every get() of a name returns the one instance built on first use."""
    calls: list[CoordinatorRegistry] = []
    registry.register("jobs", counting_factory(calls))
    first = registry.get("jobs")
    assert all(registry.get("jobs") is first for _ in range(10))
    assert len(calls) == 1


def test_concurrent_first_use_builds_exactly_one(registry):
    """Sixteen threads asking for a new name at once get one shared instance."""
    registry._cond = cond = CountingCondition()
    threads_n = 16
    barrier = threading.Barrier(threads_n)
    release = threading.Event()
    calls = 0
    results: list[CoordinatorBase[Any]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def factory(_r: CoordinatorRegistry) -> WorkCoordinator[Any]:
        nonlocal calls
        with lock:
            calls += 1
        assert release.wait(WAIT)
        return WorkCoordinator(noop)

    def worker() -> None:
        try:
            barrier.wait(WAIT)
            c = registry.get("shared")
        except BaseException as exc:
            errors.append(exc)
        else:
            with lock:
                results.append(c)

    registry.register("shared", factory)
    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for t in threads:
        t.start()
    # One thread runs the factory; the other fifteen must be parked waiting for it.
    cond.wait_for_waiters(threads_n - 1)
    release.set()
    for t in threads:
        t.join(WAIT)
    assert errors == []
    assert calls == 1
    assert len(results) == threads_n
    assert all(c is results[0] for c in results)


def test_unknown_name_lists_registered_names_sorted(registry):
    """An unknown name raises UnknownCoordinatorError naming it and the sorted names."""
    with pytest.raises(UnknownCoordinatorError) as info:
        registry.get("nope")
    assert str(info.value) == "no coordinator named 'nope' is registered (registered: none)"
    registry.register_work("zeta", noop)
    registry.register_work("alpha", noop)
    with pytest.raises(KeyError) as info2:
        registry.get("mystery")
    assert isinstance(info2.value, UnknownCoordinatorError)
    assert "'mystery'" in str(info2.value)
    assert "registered: 'alpha', 'zeta'" in str(info2.value)


def test_default_name_is_empty_string(registry):
    """get() with no name returns the coordinator registered as ""."""
    registry.register_work("", noop)
    c = registry.get()
    assert c is registry.get("")
    assert c.options.name is None
    assert c.name  # generated, not the empty registration name
    with pytest.raises(UnknownCoordinatorError, match="''"):
        CoordinatorRegistry().get()


def test_helpers_name_coordinators_after_registration(registry):
    """Options without a name take the registration name; an explicit name is kept."""
    registry.register_work("mail", noop, CoordinatorOptions(max_concurrency=2))
    registry.register_work("sms", noop, CoordinatorOptions(name="texts"))
    mail = registry.get("mail")
    assert mail.name == "mail"
    assert mail.max_concurrency == 2
    assert registry.get("sms").name == "texts"


def test_factories_can_get_other_coordinators(registry):
    """A factory receives the registry and may build on another registered coordinator."""
    seen: list[int] = []
    registry.register_work("sink", seen.append, CoordinatorOptions(max_concurrency=1))

    def pipeline(r: CoordinatorRegistry) -> WorkCoordinator[int]:
        sink = r.get("sink")
        return WorkCoordinator(lambda item: sink.enqueue(item * 10))

    registry.register("doubler", pipeline)
    doubler = registry.get("doubler")
    assert registry.created == ("sink", "doubler")
    for i in range(5):
        doubler.enqueue(i)
    doubler.complete()
    doubler.drain(WAIT)
    sink = registry.get("sink")
    sink.complete()
    sink.drain(WAIT)
    assert sorted(seen) == [0, 10, 20, 30, 40]


def test_factory_asking_for_itself_is_a_cycle(registry):
    """A factory that needs its own name raises RuntimeError instead of deadlocking."""
    registry.register("self", lambda r: r.get("self"))
    with pytest.raises(RuntimeError, match=r"cycle .*'self' -> 'self'"):
        registry.get("self")
    registry.register("a", lambda r: r.get("b"))
    registry.register("b", lambda r: r.get("a"))
    with pytest.raises(RuntimeError, match=r"cycle .*'a' -> 'b' -> 'a'"):
        registry.get("a")
    assert registry.created == ()
    assert not registry._building


def test_cycle_across_threads_is_detected(registry):
    """Two threads building x -> y and y -> x both fail with a cycle, never deadlock."""
    x_started, y_started = threading.Event(), threading.Event()

    def make(started: threading.Event, other: threading.Event, wants: str) -> Any:
        def factory(r: CoordinatorRegistry) -> CoordinatorBase[Any]:
            started.set()
            assert other.wait(WAIT)
            return r.get(wants)

        return factory

    registry.register("x", make(x_started, y_started, "y"))
    registry.register("y", make(y_started, x_started, "x"))
    errors: dict[str, BaseException] = {}

    def worker(name: str) -> None:
        try:
            registry.get(name)
        except BaseException as exc:
            errors[name] = exc

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()
    assert set(errors) == {"x", "y"}
    assert all(isinstance(e, RuntimeError) and "cycle" in str(e) for e in errors.values())
    assert registry.created == ()


def test_failing_factory_caches_nothing_and_is_retried(registry):
    """A factory's exception reaches the getter; the next get() calls the factory again."""
    attempts = 0

    def flaky(_r: CoordinatorRegistry) -> WorkCoordinator[Any]:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("backend down")
        return WorkCoordinator(noop)

    registry.register("flaky", flaky)
    with pytest.raises(ConnectionError, match="backend down"):
        registry.get("flaky")
    assert registry.created == ()
    c = registry.get("flaky")
    assert attempts == 2
    assert registry.get("flaky") is c


def test_factory_returning_non_coordinator_is_a_type_error(registry):
    """A factory must return a coordinator; anything else raises TypeError and is not cached."""
    registry.register("bad", lambda _r: "not a coordinator")
    with pytest.raises(TypeError, match="'bad' must return a coordinator, got str"):
        registry.get("bad")
    assert registry.created == ()


# -- lifecycle -------------------------------------------------------------------------


def test_close_closes_every_created_coordinator_newest_first():
    """close() closes created coordinators in reverse creation order and stops their threads."""
    before = set(library_threads())
    log: list[str] = []
    r = CoordinatorRegistry()
    for label in ("first", "second", "unused"):
        r.register(label, lambda _r, label=label: Recording(label, log))
    first, second = r.get("first"), r.get("second")
    # SPEC 14: building starts no thread; the first item does.
    assert not set(library_threads()) - before
    first.enqueue(1)
    second.enqueue(2)
    assert set(library_threads()) - before
    r.close(WAIT)
    assert log == ["second", "first"]
    assert first.is_completed
    assert second.is_completed
    assert r.created == ()
    assert set(library_threads()) - before == set()
    r.close()  # idempotent
    assert log == ["second", "first"]


def test_use_after_close_raises_registry_closed():
    """After close() every register and get raises RegistryClosedError naming the state."""
    r = CoordinatorRegistry()
    r.register_work("w", noop)
    r.close()
    assert r.is_closed
    assert repr(r) == "<CoordinatorRegistry closed registered=1 created=0 building=0>"
    with pytest.raises(RegistryClosedError, match="registry that is closed"):
        r.get("w")
    with pytest.raises(RegistryClosedError, match="closed"):
        r.register("other", lambda _r: WorkCoordinator(noop))
    with pytest.raises(RegistryClosedError, match="closed"):
        r.register_work("other", noop)
    with pytest.raises(RuntimeError):
        r.register_result("other", noop)


def test_context_manager_closes_on_exit():
    """Leaving a `with CoordinatorRegistry()` block closes what it created."""
    with CoordinatorRegistry() as r:
        r.register_work("w", noop)
        c = r.get("w")
        assert not c.is_completed
    assert c.is_completed
    assert r.is_closed


def test_close_during_build_closes_the_new_coordinator():
    """A coordinator whose factory finishes after close() began is closed, not handed out."""
    r = CoordinatorRegistry()
    r._cond = cond = CountingCondition()
    entered, release = threading.Event(), threading.Event()
    built: list[WorkCoordinator[Any]] = []
    outcome: list[BaseException] = []

    def slow(_r: CoordinatorRegistry) -> WorkCoordinator[Any]:
        entered.set()
        assert release.wait(WAIT)
        built.append(WorkCoordinator(noop))
        return built[0]

    def getter() -> None:
        try:
            r.get("slow")
        except BaseException as exc:
            outcome.append(exc)

    r.register("slow", slow)
    getting = threading.Thread(target=getter)
    getting.start()
    assert entered.wait(WAIT)
    closing = threading.Thread(target=r.close)
    closing.start()
    cond.wait_for_waiters(1)  # close() is now waiting for the build to finish
    assert "closing" in repr(r)
    release.set()
    getting.join(WAIT)
    closing.join(WAIT)
    assert not closing.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], RegistryClosedError)
    assert "'slow'" in str(outcome[0])
    assert built[0].is_completed


def test_repr_shows_state_and_counts(registry):
    """repr names the state and counts registered, created and building coordinators."""
    registry.register_work("a", noop)
    registry.register_work("b", noop)
    registry.get("a")
    assert repr(registry) == "<CoordinatorRegistry open registered=2 created=1 building=0>"
    assert registry.names == ("a", "b")


# -- helpers end to end ----------------------------------------------------------------


def test_register_work_end_to_end(registry):
    """register_work builds a WorkCoordinator that processes enqueued items."""
    seen: list[int] = []
    registry.register_work("work", seen.append, CoordinatorOptions(max_concurrency=1))
    c = registry.get("work")
    assert type(c) is WorkCoordinator
    for i in range(10):
        c.enqueue(i)
    c.complete()
    c.drain(WAIT)
    assert seen == list(range(10))
    assert c.total_completed == 10


def test_register_result_end_to_end(registry):
    """register_result builds a ResultCoordinator whose window keeps the results."""
    registry.register_result("squares", lambda n: n * n, CoordinatorOptions(max_concurrency=1))
    c = registry.get("squares")
    assert isinstance(c, ResultCoordinator)
    assert c.name == "squares"
    for i in range(5):
        c.enqueue(i)
    c.complete()
    c.drain(WAIT)
    assert c.get_results() == (0, 1, 4, 9, 16)


@pytest.mark.skipif(
    importlib.util.find_spec("ephemeral_actors._coordinators._keyed") is None,
    reason="KeyedWorkCoordinator is not available yet",
)
def test_register_keyed_end_to_end(registry):
    """register_keyed builds a KeyedWorkCoordinator that runs each key in order."""
    keyed = importlib.import_module("ephemeral_actors._coordinators._keyed")
    seen: list[tuple[str, int]] = []
    lock = threading.Lock()

    def body(item: tuple[str, int]) -> None:
        with lock:
            seen.append(item)

    registry.register_keyed("keyed", lambda item: item[0], body)
    c = registry.get("keyed")
    assert isinstance(c, keyed.KeyedWorkCoordinator)
    assert c.name == "keyed"
    items = [(key, i) for i in range(5) for key in ("a", "b")]
    for item in items:
        c.enqueue(item)
    c.complete()
    c.drain(WAIT)
    assert c.total_completed == len(items)
    for key in ("a", "b"):
        assert [i for k, i in seen if k == key] == list(range(5))


def test_register_keyed_imports_lazily_and_names_options(registry, monkeypatch):
    """register_keyed finds KeyedWorkCoordinator at registration and passes named options."""
    built: list[tuple[Any, Any, CoordinatorOptions]] = []

    class FakeKeyed(WorkCoordinator[Any]):
        def __init__(self, key_selector: Any, body: Any, options: CoordinatorOptions) -> None:
            built.append((key_selector, body, options))
            super().__init__(body, options)

    fake = types.ModuleType("ephemeral_actors._coordinators._keyed")
    fake.KeyedWorkCoordinator = FakeKeyed  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ephemeral_actors._coordinators._keyed", fake)

    def selector(item: Any) -> Any:
        return item

    registry.register_keyed("tenants", selector, noop, CoordinatorOptions(max_concurrency=3))
    assert built == []
    c = registry.get("tenants")
    assert isinstance(c, FakeKeyed)
    ((key_selector, body, options),) = built
    assert key_selector is selector
    assert body is noop
    assert options.name == "tenants"
    assert options.max_concurrency == 3
    with pytest.raises(TypeError, match="key_selector must be callable"):
        registry.register_keyed("other", "not callable", noop)


# -- bad arguments ---------------------------------------------------------------------


def test_a_factory_that_can_take_the_registry_is_accepted_whatever_its_shape(registry):
    """The check at `register()` binds one argument: defaults and `*args` pass."""
    registry.register("star", lambda *args: WorkCoordinator(noop))
    registry.register("default", lambda r=None, extra=1: WorkCoordinator(noop))
    assert registry.names == ("default", "star")
    assert isinstance(registry.get("star"), WorkCoordinator)


def test_register_rejects_bad_arguments(registry):
    """Bad names, factories, bodies and options raise TypeError naming the argument."""
    with pytest.raises(TypeError, match="name must be a str, got int"):
        registry.register(1, lambda _r: WorkCoordinator(noop))
    with pytest.raises(TypeError, match="factory must be callable"):
        registry.register("x", 3)
    with pytest.raises(TypeError, match=r"factory must take the registry .* signature \(\)"):
        registry.register("x", lambda: WorkCoordinator(noop))
    with pytest.raises(TypeError, match=r"factory must take the registry .* \(a, b\)"):
        registry.register("x", lambda a, b: WorkCoordinator(noop))
    with pytest.raises(TypeError, match="body must be callable"):
        registry.register_work("x", 3)
    with pytest.raises(TypeError, match="body must be callable"):
        registry.register_result("x", None)
    with pytest.raises(TypeError, match="options must be a CoordinatorOptions"):
        registry.register_work("x", noop, {"max_concurrency": 2})
    with pytest.raises(TypeError, match="name must be a str, got NoneType"):
        registry.get(None)
    assert registry.names == ()
    assert 1 not in registry


def test_register_same_name_twice_is_a_value_error(registry):
    """A name can be registered once; a second registration raises ValueError naming it."""
    registry.register_work("dup", noop)
    with pytest.raises(ValueError, match="'dup' is already registered"):
        registry.register_work("dup", noop)
    with pytest.raises(ValueError, match="'dup'"):
        registry.register("dup", lambda _r: WorkCoordinator(noop))


def test_close_rejects_bad_timeout(registry):
    """close(timeout) validates its timeout like every other duration."""
    with pytest.raises(ValueError, match="timeout"):
        registry.close(-1)
    assert not registry.is_closed


def test_register_returns_a_typed_key_that_is_the_name(registry):
    """register*() return a CoordinatorKey: the name itself, usable with get()."""
    work = registry.register_work("work", lambda _item: None)
    result = registry.register_result("result", len)
    keyed = registry.register_keyed("keyed", str, lambda _item: None)
    custom = registry.register("custom", lambda _r: WorkCoordinator(lambda _item: None))
    for key, name in ((work, "work"), (result, "result"), (keyed, "keyed"), (custom, "custom")):
        assert isinstance(key, CoordinatorKey)
        assert isinstance(key, str)
        assert key == name
        assert registry.get(key) is registry.get(name)
        assert repr(key) == f"CoordinatorKey({name!r})"
    assert isinstance(registry.get(result), ResultCoordinator)
    assert registry.created == ("work", "result", "keyed", "custom")
    assert all(type(name) is str for name in (*registry.names, *registry.created))


def test_a_key_reports_as_its_plain_name_in_errors(registry):
    """Errors show the name, not the key's repr."""
    key = CoordinatorKey("missing")
    with pytest.raises(UnknownCoordinatorError, match="no coordinator named 'missing'"):
        registry.get(key)
