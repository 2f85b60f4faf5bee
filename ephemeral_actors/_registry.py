"""`CoordinatorRegistry`: named coordinators, built lazily on first use (SPEC section 11).

A registry maps names to factories. `get(name)` builds the coordinator the first time
it is asked for and hands back the same instance afterwards; `close()` closes every
coordinator it built. It is an ordinary object: create one per application (or per
test) and pass it around; the library keeps no registry of its own.

Concurrency: one lock guards the tables, but no factory runs under it. A name that is
being built carries a "being built by thread T" marker; other threads asking for that
name wait on a condition until the builder stores the coordinator or fails. Factories
may therefore call `get()` for *other* names (a coordinator that feeds another one),
and a factory that ends up asking for a name its own build depends on is reported as a
cycle instead of deadlocking, also when the cycle spans two threads.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar, overload

from ephemeral_actors._coordinators._base import CoordinatorBase, check_options
from ephemeral_actors._coordinators._work import ResultCoordinator, WorkCoordinator
from ephemeral_actors._deadline import deadline_after, remaining
from ephemeral_actors._errors import RegistryClosedError, UnknownCoordinatorError
from ephemeral_actors._validate import check_seconds_or_none

if TYPE_CHECKING:
    from collections.abc import Awaitable, Coroutine
    from types import TracebackType

    from ephemeral_actors._coordinators._keyed import KeyedWorkCoordinator
    from ephemeral_actors._options import CoordinatorOptions

__all__ = ["CoordinatorFactory", "CoordinatorKey", "CoordinatorRegistry"]

CoordinatorFactory = Callable[["CoordinatorRegistry"], CoordinatorBase[Any]]
"""Builds a coordinator; called as `factory(registry)` on first `get()` of its name."""

C = TypeVar("C", bound=CoordinatorBase[Any])
T = TypeVar("T")
K = TypeVar("K")
R = TypeVar("R")


class CoordinatorKey(str, Generic[C]):
    """A registration name that also carries the coordinator's type, for `get()`.

    `register()` and the `register_*()` shorthands return one; `registry.get(key)` is
    then typed as the coordinator that was registered (the same idea as aiohttp's
    `AppKey`), so no cast or `type: ignore` is needed. It *is* the name (a `str`
    subclass), so `registry.get("emails")` and `registry.get(EMAILS)` return the same
    instance, and code that ignores the key loses nothing.

    Example:
        ```python
        EMAILS = registry.register_work("emails", send_email)
        registry.get(EMAILS).enqueue(message)  # typed: WorkCoordinator[Email]
        ```

    Added in version 0.2.0.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"CoordinatorKey({str(self)!r})"


class _State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


def _check_takes_the_registry(factory: Callable[..., Any]) -> None:
    """Fail at `register()`, not at the first `get()`, for a factory `get()` cannot call.

    Raises:
        TypeError: `factory` cannot be called with one positional argument (the registry).
    """
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return  # no signature to read (some builtins): the call itself will tell
    try:
        signature.bind(None)
    except TypeError:
        raise TypeError(
            f"factory must take the registry as its one argument (it is called as "
            f"factory(registry), e.g. lambda registry: WorkCoordinator(...)), got "
            f"{factory!r} with signature {signature}"
        ) from None


class CoordinatorRegistry:
    """Named coordinators, created lazily on first use and closed together.

    Register a factory per name with `register()` (or the `register_work()`,
    `register_keyed()` and `register_result()` shorthands), then ask for coordinators
    with `get(name)`. The first `get()` of a name calls its factory; every later call
    returns that same instance, also when many threads ask at once (exactly one
    instance is built). `close()` closes every coordinator the registry built, newest
    first; afterwards the registry refuses registrations and lookups.

    A name can be registered only once; registering it again raises `ValueError`, even
    before its first `get()`, so a typo'd second registration cannot silently replace
    a service other code already relies on. The default name is `""`.

    Example:
        ```python
        with CoordinatorRegistry() as registry:
            registry.register_work("emails", send_email, CoordinatorOptions(max_concurrency=4))
            registry.register_result("thumbnails", make_thumbnail)
            registry.get("emails").enqueue(message)
        # leaving the block closes every coordinator the registry created
        ```
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._state = _State.OPEN
        self._factories: dict[str, CoordinatorFactory] = {}
        # Creation order matters: close() closes newest first, so a coordinator built by
        # a factory that uses another one is closed before the one it feeds.
        self._instances: dict[str, CoordinatorBase[Any]] = {}
        # name -> ident of the thread running its factory (insertion order per thread
        # is that thread's build stack, which cycle messages print).
        self._building: dict[str, int] = {}
        # thread ident -> name it waits for; with `_building` this is the wait-for graph.
        self._waiting: dict[int, str] = {}

    # -- registration ------------------------------------------------------------------

    def register(self, name: str, factory: Callable[[CoordinatorRegistry], C]) -> CoordinatorKey[C]:
        """Register `factory` under `name`; it runs on the first `get(name)`.

        Args:
            name: The coordinator's name (`""` is the default name).
            factory: Called as `factory(registry)` and must return a coordinator. It
                may call `registry.get()` for other names.

        Returns:
            `name` as a `CoordinatorKey`, typed by what `factory` returns.

        Raises:
            TypeError: `name` is not a str, or `factory` is not callable or cannot be
                called with the registry as its one argument.
            ValueError: `name` is already registered.
            RegistryClosedError: The registry was closed.
        """
        _check_name(name)
        name = str(name)  # a CoordinatorKey registers (and reports) as its plain name
        if not callable(factory):
            raise TypeError(f"factory must be callable, got {type(factory).__name__} {factory!r}")
        _check_takes_the_registry(factory)
        with self._cond:
            self._check_open_locked(f"register({name!r})")
            if name in self._factories:
                raise ValueError(f"a coordinator named {name!r} is already registered")
            self._factories[name] = factory
        return CoordinatorKey(name)

    def register_work(
        self,
        name: str,
        body: Callable[[T], Any] | Callable[[T], Awaitable[Any]],
        options: CoordinatorOptions | None = None,
    ) -> CoordinatorKey[WorkCoordinator[T]]:
        """Register a `WorkCoordinator(body, options)` under `name`.

        If `options` has no `name`, the coordinator is named after the registration,
        so its logs and threads carry it (the default name `""` keeps a generated one).

        Args:
            name: The registration name.
            body: The coordinator's body, a function or coroutine function of one item.
            options: The coordinator's options; `None` means the defaults.

        Returns:
            `name` as a `CoordinatorKey`: `get(key)` is typed `WorkCoordinator[T]`.

        Raises:
            TypeError: A bad `name`, `body` or `options`.
            ValueError: `name` is already registered.
            RegistryClosedError: The registry was closed.
        """
        _check_name(name)
        _check_callable("body", body)
        named = _named_options(name, options)
        return self.register(name, lambda _registry: WorkCoordinator(body, named))

    def register_keyed(
        self,
        name: str,
        key_selector: Callable[[T], K],
        body: Callable[[T], Any] | Callable[[T], Awaitable[Any]],
        options: CoordinatorOptions | None = None,
    ) -> CoordinatorKey[KeyedWorkCoordinator[T, K]]:
        """Register a `KeyedWorkCoordinator(key_selector, body, options)` under `name`.

        Options are named after the registration as in `register_work()`.

        Args:
            name: The registration name.
            key_selector: Returns the key of an item.
            body: The coordinator's body.
            options: The coordinator's options; `None` means the defaults.

        Returns:
            `name` as a `CoordinatorKey`: `get(key)` is typed `KeyedWorkCoordinator[T, K]`.

        Raises:
            TypeError: A bad `name`, `key_selector`, `body` or `options`.
            ValueError: `name` is already registered.
            RegistryClosedError: The registry was closed.
        """
        # Imported here so this module does not depend on the keyed coordinator's
        # import graph; a missing module surfaces at registration, not at first use.
        keyed = importlib.import_module("ephemeral_actors._coordinators._keyed")
        keyed_coordinator: Callable[..., KeyedWorkCoordinator[T, K]] = keyed.KeyedWorkCoordinator

        _check_name(name)
        _check_callable("key_selector", key_selector)
        _check_callable("body", body)
        named = _named_options(name, options)
        return self.register(name, lambda _registry: keyed_coordinator(key_selector, body, named))

    @overload
    def register_result(
        self,
        name: str,
        body: Callable[[T], Coroutine[Any, Any, R]],
        options: CoordinatorOptions | None = None,
    ) -> CoordinatorKey[ResultCoordinator[T, R]]: ...
    @overload
    def register_result(
        self,
        name: str,
        body: Callable[[T], R],
        options: CoordinatorOptions | None = None,
    ) -> CoordinatorKey[ResultCoordinator[T, R]]: ...
    def register_result(
        self,
        name: str,
        body: Callable[[Any], Any],
        options: CoordinatorOptions | None = None,
    ) -> CoordinatorKey[ResultCoordinator[Any, Any]]:
        """Register a `ResultCoordinator(body, options)` under `name`.

        Options are named after the registration as in `register_work()`.

        Args:
            name: The registration name.
            body: The coordinator's body; its return value is kept in the window.
            options: The coordinator's options; `None` means the defaults.

        Returns:
            `name` as a `CoordinatorKey`: `get(key)` is typed `ResultCoordinator[T, R]`,
            with `R` what the body returns (awaited, for a coroutine function).

        Raises:
            TypeError: A bad `name`, `body` or `options`.
            ValueError: `name` is already registered.
            RegistryClosedError: The registry was closed.
        """
        _check_name(name)
        _check_callable("body", body)
        named = _named_options(name, options)
        return self.register(name, lambda _registry: ResultCoordinator(body, named))

    # -- lookup ------------------------------------------------------------------------

    @overload
    def get(self, name: CoordinatorKey[C]) -> C: ...
    @overload
    def get(self, name: str = "") -> CoordinatorBase[Any]: ...
    def get(self, name: str = "") -> CoordinatorBase[Any]:
        """Return the coordinator registered as `name`, building it on first use.

        Given the `CoordinatorKey` that `register()` or a `register_*()` shorthand
        returned, the result is typed as the registered coordinator
        (`WorkCoordinator[T]`, ...); given a plain `str`, it is `CoordinatorBase[Any]`.

        If another thread is building it, wait for that build. If the build fails,
        nothing is cached: the exception reaches the caller whose call ran the
        factory, and the next `get()` (including one that was waiting) tries again.

        Args:
            name: The registration name or its `CoordinatorKey`; `""` is the default name.

        Returns:
            The one coordinator instance for `name`.

        Raises:
            TypeError: `name` is not a str, or the factory returned something that is
                not a coordinator.
            UnknownCoordinatorError: Nothing is registered as `name`.
            RuntimeError: The factory of `name` (directly or through other factories,
                on any thread) needs `name` itself: a dependency cycle.
            RegistryClosedError: The registry is closed, or was closed during the build.
            BaseException: Whatever the factory raised.
        """
        _check_name(name)
        name = str(name)  # a CoordinatorKey looks up (and reports) as its plain name
        me = threading.get_ident()
        with self._cond:
            while True:
                self._check_open_locked(f"get({name!r})")
                instance = self._instances.get(name)
                if instance is not None:
                    return instance
                factory = self._factories.get(name)
                if factory is None:
                    raise UnknownCoordinatorError(self._unknown_message_locked(name))
                if name not in self._building:
                    break
                cycle = self._find_cycle_locked(me, name)
                if cycle is not None:
                    raise RuntimeError(
                        f"dependency cycle while building coordinator {name!r}: "
                        f"{' -> '.join(repr(n) for n in cycle)}"
                    )
                self._waiting[me] = name
                try:
                    self._cond.wait()
                finally:
                    del self._waiting[me]
            self._building[name] = me
        return self._build(name, factory)

    def _build(self, name: str, factory: CoordinatorFactory) -> CoordinatorBase[Any]:
        coordinator: CoordinatorBase[Any] | None = None
        try:
            product: object = factory(self)
            if isinstance(product, CoordinatorBase):
                coordinator = product
        finally:
            # Clearing the marker and storing the instance happen under one hold of the
            # lock: a waiter woken in between would otherwise start a second build.
            with self._cond:
                del self._building[name]
                self._cond.notify_all()
                state = self._state
                if coordinator is not None and state is _State.OPEN:
                    self._instances[name] = coordinator
        if coordinator is None:
            raise TypeError(
                f"factory of coordinator {name!r} must return a coordinator, "
                f"got {type(product).__name__}"
            )
        if state is _State.OPEN:
            return coordinator
        # close() started while the factory ran and no longer tracks this build, so the
        # fresh coordinator is ours to close; handing it out would leak its threads.
        coordinator.close()
        raise RegistryClosedError(
            f"registry was {state.value} while coordinator {name!r} was being built; "
            "the new coordinator was closed"
        )

    def _find_cycle_locked(self, me: int, name: str) -> list[str] | None:
        """Return the cycle waiting for `name` would close, or None if waiting is safe.

        Thread A builds "x" and asks for "y"; thread B builds "y" and asks for "x".
        Each would wait for the other forever. Follow "name -> its builder -> the name
        that builder waits for" until a builder is not waiting (no cycle) or the chain
        comes back to this thread (cycle).
        """
        path = [n for n, owner in self._building.items() if owner == me]
        wanted = name
        seen: set[int] = set()
        while True:
            owner = self._building.get(wanted)
            if owner is None:
                return None
            if owner == me:
                path.append(wanted)
                return path
            if owner in seen:  # pragma: no cover - every wait is checked, so never cyclic
                return None
            seen.add(owner)
            stack = [n for n, t in self._building.items() if t == owner]
            path.extend(stack[stack.index(wanted) :])
            next_wanted = self._waiting.get(owner)
            if next_wanted is None:
                return None
            wanted = next_wanted

    def _unknown_message_locked(self, name: str) -> str:
        known = ", ".join(repr(n) for n in sorted(self._factories)) or "none"
        return f"no coordinator named {name!r} is registered (registered: {known})"

    def __contains__(self, name: object) -> bool:
        with self._cond:
            return isinstance(name, str) and name in self._factories

    @property
    def names(self) -> tuple[str, ...]:
        """Every registered name, sorted."""
        with self._cond:
            return tuple(sorted(self._factories))

    @property
    def created(self) -> tuple[str, ...]:
        """Names whose coordinator has been built and not yet closed, in creation order."""
        with self._cond:
            return tuple(self._instances)

    @property
    def is_closed(self) -> bool:
        """True once `close()` has started."""
        return self._state is not _State.OPEN

    def __repr__(self) -> str:
        with self._cond:
            return (
                f"<CoordinatorRegistry {self._state.value} registered={len(self._factories)} "
                f"created={len(self._instances)} building={len(self._building)}>"
            )

    # -- lifecycle ---------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Close every coordinator this registry created, newest first. Idempotent.

        Synchronous: waits for builds running on other threads to finish (their
        coordinators are closed by the builder), then closes the created coordinators.
        A concurrent second `close()` waits until the first one is done.

        Args:
            timeout: Seconds for the whole close, shared by every coordinator's
                `close()`; `None` waits as long as it takes. Running bodies that outlive
                it are abandoned as `CoordinatorBase.close` describes.

        Raises:
            Exception: A coordinator's `close()` raised; the others are still closed.
                Several failures are raised together as an `ExceptionGroup`.
        """
        timeout = check_seconds_or_none("timeout", timeout)
        deadline = deadline_after(timeout)
        me = threading.get_ident()
        with self._cond:
            if self._state is not _State.OPEN:
                # Another close() is running (or done): return when it is done.
                self._cond.wait_for(lambda: self._state is _State.CLOSED, remaining(deadline))
                return
            self._state = _State.CLOSING
            # A factory on another thread may be about to hand us a coordinator; wait
            # for it so nothing is left running after close() returns. Builds on this
            # thread (close() called from a factory) cannot finish while we wait.
            self._cond.wait_for(
                lambda: all(owner == me for owner in self._building.values()),
                remaining(deadline),
            )
            instances = list(self._instances.values())
        errors: list[Exception] = []
        try:
            for instance in reversed(instances):
                try:
                    instance.close(remaining(deadline))
                except Exception as exc:
                    errors.append(exc)
        finally:
            with self._cond:
                self._instances.clear()
                self._state = _State.CLOSED
                self._cond.notify_all()
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ExceptionGroup("closing coordinators of the registry failed", errors)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open_locked(self, operation: str) -> None:
        if self._state is not _State.OPEN:
            raise RegistryClosedError(
                f"{operation} on a registry that is {self._state.value}; "
                "it creates no more coordinators"
            )


def _check_name(name: object) -> None:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__} {name!r}")


def _check_callable(argument: str, value: object) -> None:
    if not callable(value):
        raise TypeError(f"{argument} must be callable, got {type(value).__name__} {value!r}")


def _named_options(name: str, options: object) -> CoordinatorOptions:
    """Validate `options` and give them the registration name if they have none.

    The default name `""` would make a poor coordinator name, so it leaves the
    options' name unset and the coordinator generates one.
    """
    checked = check_options(options)
    if checked.name is None and name:
        return dataclasses.replace(checked, name=name)
    return checked
