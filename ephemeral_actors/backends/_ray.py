"""`RayBackend`: run a coordinator's bodies on a Ray cluster (SPEC section 13).

Only the body leaves this process. The wrapped body is a coroutine function, which
the coordinator runs as a task on its event loop exactly as it runs an in-process
coroutine body, so per-key order, limits, the window, pause/resume, deferral and
every counter stay local and need no Ray-specific code — and a body in flight on
Ray holds no coordinator thread, only a suspended task. One item flows like this:

```
coordinator event loop (here)               Ray worker (task or pool actor)
--------------------------------            -------------------------------
await wrapped(item)
  submit runner(item, op id, key)  ───────▶ _execute(): current_operation() is a
  await the ref's future, waking             _RemoteOperation; body(item) runs;
  every 0.1 s to check op.cancelled          op.signal(name) records (seq, name)
    (→ ray.cancel(ref))                      and pushes it to the relay actor ──┐
  relay thread: pull from the relay  ◀──────────────────────────────────────────┘
    and replay on the local Operation
  ◀──── (outcome, value, events) ──────────
  replay events not yet relayed; return the value or raise the body's exception
```

Signals therefore reach the local coordinator while the body runs (so
`cancel_on_signals` and `defer_on_signals` act at once), and the task's return value
carries the complete list, so none is lost if the live path is slow or broken:
events carry a per-operation sequence number and each is applied exactly once, in
order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import inspect
import itertools
import logging
import signal
import threading
import time
import types
import uuid
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, cast

import ray
import ray.exceptions
from ray import cloudpickle

from ephemeral_actors._errors import OperationCancelledError, WorkerCrashError
from ephemeral_actors._operation import Operation, _current, running_operation
from ephemeral_actors._public import publish
from ephemeral_actors._validate import check_int
from ephemeral_actors.backends._relay import Call, RecordingOperation, portable_error
from ephemeral_actors.backends._relay import Event as _Event

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self


__all__ = ["RayBackend"]

logger = logging.getLogger("ephemeral_actors")

_POLL_INTERVAL: Final = 0.1
"""Seconds between checks of `Operation.cancelled` while a body runs remotely."""
_RELAY_WAIT: Final = 0.2
"""Long-poll timeout of the relay thread; it stops this long after the last body ends."""
_RELAY_CAPACITY: Final = 10_000
"""Events the relay actor buffers; older ones are dropped (the task's return has them)."""

# Outcomes a runner returns, with the value and the body's events.
_OK: Final = 0
_RAISED: Final = 1
_CANCELLED: Final = 2

_LOST_WORKER: Final = (
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.RayActorError,  # ActorDiedError, ActorUnavailableError
    ray.exceptions.ObjectLostError,  # OwnerDiedError and the other lost-object errors
    ray.exceptions.LocalRayletDiedError,
    ray.exceptions.OutOfMemoryError,  # the memory monitor killed the worker
)
"""Ray errors that mean the machinery lost the body, not that the body failed."""


# -- the remote side ------------------------------------------------------------------------
#
# Everything in this section runs inside Ray workers. It must stay importable there, so
# `ephemeral_actors` has to be installed in the cluster's Python environment.


class _RemoteOperation(RecordingOperation):
    """`current_operation()` for a body running on Ray.

    It records what the body does to its operation — signals, caused signals,
    retractions — and pushes each record to the backend's relay actor, which the
    local side replays on the real `Operation`. `cancelled` reads Ray's cancellation
    flag for the running task.
    """

    __slots__ = ("_relay_name",)

    where = "on Ray"

    def __init__(self, op_id: int, key: str | None, relay_name: str) -> None:
        super().__init__(op_id, key)
        self._relay_name = relay_name

    @property
    def cancelled(self) -> bool:
        """True once Ray was asked to cancel this task (`ray.cancel`)."""
        return _cancel_requested()

    def push(self, event: _Event) -> None:
        """Push `event` to the relay actor (fire and forget: the task's return has it too)."""
        relay = _relay_handle(self._relay_name)
        if relay is not None:
            with contextlib.suppress(Exception):
                relay.push.remote(self.id, event)


def _cancel_requested() -> bool:
    try:
        return bool(ray.get_runtime_context().is_canceled())
    except Exception:  # not in a Ray worker, or an async actor
        return False


_relays: dict[str, Any] = {}
_relay_retry_at: dict[str, float] = {}


def _relay_handle(name: str) -> Any:
    """The relay actor called `name`, looked up once per worker process."""
    handle = _relays.get(name)
    if handle is None and time.monotonic() >= _relay_retry_at.get(name, 0.0):
        try:
            handle = _relays[name] = ray.get_actor(name)
        except Exception:
            # Not reachable (yet): the events still travel with the return value.
            _relay_retry_at[name] = time.monotonic() + 1.0
    return handle


def _execute(
    body: Callable[[Any], Any],
    is_async: bool,
    item: Any,
    *,
    op_id: int,
    key: str | None,
    relay_name: str,
    loop: asyncio.AbstractEventLoop | None = None,
) -> tuple[int, Any, list[_Event]]:
    """Run `body(item)` in a Ray worker; return (outcome, result or exception, events)."""
    _let_ray_cancel_interrupt()
    op = _RemoteOperation(op_id, key, relay_name) if op_id else None
    events = op.events if op is not None else []
    token = _current.set(cast("Operation | None", op))
    try:
        if is_async:
            coro = body(item)
            result = loop.run_until_complete(coro) if loop is not None else asyncio.run(coro)
        else:
            result = body(item)
            if type(result) is types.CoroutineType:
                result.close()
                raise TypeError(  # noqa: TRY301 - reported like any body failure
                    "the body returned a coroutine; declare it with 'async def' so the "
                    "backend runs it on an event loop"
                )
    except KeyboardInterrupt:
        # In a Ray task this is, in practice, `ray.cancel` interrupting the body.
        # Answering normally, rather than letting it propagate, keeps the events the
        # body emitted before it was interrupted.
        return _CANCELLED, None, events
    except BaseException as exc:
        return _RAISED, _portable(exc), events
    finally:
        _current.reset(token)
    return _OK, result, events


def _let_ray_cancel_interrupt() -> None:
    """Give this worker Python's SIGINT handler back if it was started ignoring SIGINT.

    `ray.cancel` interrupts a running task with SIGINT (a `KeyboardInterrupt` in the
    body). A driver that ignores SIGINT when it starts a local cluster (under `nohup`,
    as a background job of a non-interactive shell, as many daemons do) hands that
    disposition down to every worker process, and Python then never installs its
    handler there: cancel and `item_timeout` silently stopped interrupting bodies.
    Only possible on the worker's main thread, where Ray runs plain tasks.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        with contextlib.suppress(ValueError):  # not the main thread: nothing to do
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _portable(exc: BaseException) -> BaseException:
    """`exc` with its remote traceback as a note, or a stand-in if it cannot be pickled."""
    # ray.cloudpickle has no type hints.
    return portable_error(exc, "a Ray worker", cloudpickle.dumps)


def _make_task_runner(
    body: Callable[[Any], Any], is_async: bool, relay_name: str
) -> Callable[[Any, int, str | None], tuple[int, Any, list[_Event]]]:
    def run(item: Any, op_id: int, key: str | None) -> tuple[int, Any, list[_Event]]:
        return _execute(body, is_async, item, op_id=op_id, key=key, relay_name=relay_name)

    # The body's name is what Ray's dashboard and logs show for the task.
    name = getattr(body, "__qualname__", None) or type(body).__qualname__
    run.__name__ = run.__qualname__ = name
    return run


class _BodyActor:
    """A pool actor: runs one coordinator's body for item after item (`actors=N`)."""

    def __init__(self, body: Callable[[Any], Any], is_async: bool, relay_name: str) -> None:
        self._body = body
        self._is_async = is_async
        self._relay_name = relay_name
        # One event loop per actor thread, kept, so async clients created by one item
        # (bound to their loop) remain usable by the next.
        self._loops = threading.local()

    def run(self, item: Any, op_id: int, key: str | None) -> tuple[int, Any, list[_Event]]:
        loop = None
        if self._is_async:
            loop = getattr(self._loops, "loop", None)
            if loop is None:
                loop = self._loops.loop = asyncio.new_event_loop()
        return _execute(
            self._body,
            self._is_async,
            item,
            op_id=op_id,
            key=key,
            relay_name=self._relay_name,
            loop=loop,
        )


class _SignalRelay:
    """An async actor that buffers signal events from remote bodies until pulled."""

    def __init__(self, capacity: int) -> None:
        self._events: collections.deque[tuple[int, _Event]] = collections.deque(maxlen=capacity)
        self._ready = asyncio.Event()

    async def push(self, op_id: int, event: _Event) -> None:
        self._events.append((op_id, event))
        self._ready.set()

    async def pull(self, wait: float) -> list[tuple[int, _Event]]:
        if not self._events:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._ready.wait()
        events = list(self._events)
        self._events.clear()
        self._ready.clear()
        return events


# -- the local side -------------------------------------------------------------------------


class _State(enum.Enum):
    NEW = "new"
    """Built; Ray is touched on first use."""
    STARTED = "started"
    """Ray is initialised and the relay actor exists."""
    SHUT_DOWN = "shut down"
    """`shutdown()` ran; bodies are refused."""


class _RayOwner:
    """A thread that starts Ray, keeps its head processes alive, and shuts it down."""

    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ray-backend-owner", daemon=True)

    def start_ray(self) -> None:
        """Start the thread and wait for `ray.init`; re-raise its exception."""
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def stop(self) -> None:
        """Shut Ray down and end the thread."""
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            ray.init(**self._options)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._stopping.wait()
        if ray.is_initialized():
            ray.shutdown()


class _Slot:
    """One pool actor and how many items are queued on it or running."""

    __slots__ = ("busy", "handle")

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.busy = 0


class _Wrapped:
    """What `RayBackend.wrap` returns: a coroutine function that runs the body on Ray."""

    def __init__(
        self, backend: RayBackend, body: Callable[[Any], Any], is_async: bool, actors: int | None
    ) -> None:
        self.backend = backend
        self.body = body
        self.is_async = is_async
        self.actors = actors
        self.name = getattr(body, "__qualname__", None) or type(body).__qualname__
        self._task: Any = None
        self._slots: list[_Slot] | None = None
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = f"{self.actors} actors" if self.actors else "tasks"
        return f"<RayBackend body {self.name} on {where}>"

    async def __call__(self, item: Any) -> Any:
        return await self.backend._run(self, item)

    def reset(self) -> None:
        """Forget the pool: Ray was restarted, its actors are gone.

        (Remote functions survive: Ray exports them again to a new session.)
        """
        with self._lock:
            self._slots = None

    def submit(self, item: Any, op: Operation | None) -> tuple[Any, _Slot | None]:
        """Start `body(item)` on Ray; the ref of its outcome and the pool slot used."""
        op_id, key = (op.id, op.key) if op is not None else (0, None)
        if self.actors is None:
            task = self._task
            if task is None:
                task = self._task = self.backend._task_for(self.body, self.is_async)
            return task.remote(item, op_id, key), None
        slot = self._acquire_slot()
        try:
            return slot.handle.run.remote(item, op_id, key), slot
        except BaseException:
            self.release(slot)
            raise

    def _acquire_slot(self) -> _Slot:
        # The least busy actor; ties go round-robin, so an idle pool spreads its work.
        with self._lock:
            slots = self._slots
            if slots is None:
                slots = self._slots = [self._new_slot() for _ in range(self.actors or 0)]
            start = next(self._turn)
            n = len(slots)
            slot = min((slots[(start + i) % n] for i in range(n)), key=lambda s: s.busy)
            slot.busy += 1
            return slot

    def _new_slot(self) -> _Slot:
        actor = _remote(_BodyActor, self.backend._actor_options)
        return _Slot(actor.remote(self.body, self.is_async, self.backend._relay_name))

    def release(self, slot: _Slot) -> None:
        with self._lock:
            slot.busy -= 1

    def replace(self, slot: _Slot, op: Operation | None, error: BaseException) -> None:
        """The slot's actor died: start a fresh one in its place (once).

        Items still counted on the dead slot release it as their errors arrive; the
        fresh actor starts idle.
        """
        with self._lock:
            slots = self._slots
            if slots is None or slot not in slots or self.backend._state is _State.SHUT_DOWN:
                return
            slots[slots.index(slot)] = self._new_slot()
        logger.warning(
            "RayBackend: a pool actor running %s died (%s); started a replacement",
            self.name,
            type(error).__name__,
            extra={
                "coordinator": None,
                "operation_id": _op_id(op),
                "key": op.key if op is not None else None,
                "error_type": type(error).__name__,
                "event": "ray.actor.replaced",
            },
        )

    def close(self) -> None:
        """Kill this body's pool actors (items still queued on them fail)."""
        with self._lock:
            slots, self._slots = self._slots, None
        for slot in slots or ():
            with contextlib.suppress(Exception):
                ray.kill(slot.handle)


class RayBackend:
    """Runs coordinator bodies as Ray tasks, or on a pool of Ray actors.

    The coordinator — supervision, per-key order, limits, the window, signals,
    pause/resume, deferral, cancel — stays in this process; only `body(item)` runs on
    the cluster. Items, results and exceptions cross the process boundary, so they
    must be picklable (bodies are pickled by value when they are closures or defined
    in `__main__`).

    Inside a remote body, `current_operation()` works: `signal()`, `emit_caused()`,
    `retract()` and `retract_matching()` reach the local operation while the body
    runs (their return value is always True / a local count: constraints are applied
    on replay), and `cancelled` / `raise_if_cancelled()` read Ray's cancellation flag.

    Outcomes: a body's exception fails the operation with the same type and message
    (its remote traceback added as a note); a result is kept by `ResultCoordinator`;
    when the local operation is asked to cancel (`cancel()`, a cancel signal) its task
    is cancelled with `ray.cancel` — a running task receives `KeyboardInterrupt`, a
    running pool actor only sets the flag — and the operation counts as cancelled;
    a lost worker, actor or node fails the operation with `WorkerCrashError`.

    Ray is initialised on first use unless it already is. If you call `ray.init()`
    yourself, you own Ray's lifecycle; `shutdown()` only shuts down a Ray instance
    this backend started.

    Args:
        address: Passed to `ray.init`: `None` starts a local Ray (or joins the one
            `RAY_ADDRESS` names), `"auto"` joins the cluster running on this machine,
            `"ray://host:10001"` connects through Ray Client.
        num_cpus: CPUs of the local Ray instance this backend starts; only with
            `address=None` or `"local"`.
        ray_remote_options: Options for `ray.remote` of the tasks (or, with `actors`,
            of the pool actors): `num_cpus`, `num_gpus`, `memory`, `resources`,
            `runtime_env`, `scheduling_strategy`, `max_retries`, ... Tasks default to
            `max_retries=0`: each item runs at most once, as in-process.
        actors: Run bodies on a pool of this many Ray actors per coordinator (long-lived
            worker processes that keep state, such as a loaded model, between items)
            instead of as one task per item. Each actor runs one item at a time; an
            item goes to the least busy actor.

    Example:
        ```python
        backend = RayBackend(num_cpus=4)
        options = CoordinatorOptions(max_concurrency=16, backend=backend)
        with ResultCoordinator(score, options) as scores:
            scores.enqueue_many(documents)
        backend.shutdown()
        ```

    Added in version 0.1.0.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        ray_remote_options: Mapping[str, Any] | None = None,
        actors: int | None = None,
    ) -> None:
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address must be a str or None, got {type(address).__name__}")
        if num_cpus is not None:
            check_int("num_cpus", num_cpus, minimum=1)
            if address not in (None, "local"):
                raise ValueError(
                    f"num_cpus sizes a local Ray instance; it cannot be used with "
                    f"address={address!r} (the cluster decides its own CPUs)"
                )
        if actors is not None:
            check_int("actors", actors, minimum=1)
        if ray_remote_options is not None and not isinstance(ray_remote_options, Mapping):
            raise TypeError(
                "ray_remote_options must be a mapping of ray.remote options or None, "
                f"got {type(ray_remote_options).__name__}"
            )
        self.address = address
        self.num_cpus = num_cpus
        self.actors = actors
        user = dict(ray_remote_options or {})
        self.ray_remote_options: Mapping[str, Any] = types.MappingProxyType(user)
        # ray.remote validates option names and values now, not at the first item.
        if actors is None:
            self._task_options = {"max_retries": 0, **user}
            self._actor_options: dict[str, Any] = {}
            _remote(_execute, self._task_options)
        else:
            self._task_options = {}
            self._actor_options = dict(user)
            _remote(_BodyActor, self._actor_options)

        self._state = _State.NEW
        self._lock = threading.Lock()
        self._owns_ray = False
        self._owner: _RayOwner | None = None
        self._relay_name = f"ephemeral-actors-signal-relay-{uuid.uuid4().hex[:12]}"
        self._relay: Any = None
        self._relay_thread: threading.Thread | None = None
        self._calls: dict[int, Call] = {}
        # Weak: a coordinator that is gone takes its wrapped body (and the pool, whose
        # actors Ray ends when their last handle goes) with it.
        self._wrapped: weakref.WeakSet[_Wrapped] = weakref.WeakSet()
        self._tasks: dict[tuple[Callable[[Any], Any], bool], Any] = {}
        self._submitted = 0
        self._in_flight = 0

    def __repr__(self) -> str:
        where = f"actors={self.actors}" if self.actors else "tasks"
        address = f" address={self.address!r}" if self.address is not None else ""
        owner = " owns-ray" if self._owns_ray else ""
        return (
            f"<RayBackend {self._state.value} {where}{address}{owner} "
            f"in_flight={self._in_flight} submitted={self._submitted}>"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    @property
    def owns_ray(self) -> bool:
        """True if this backend called `ray.init()` (and so `shutdown()` ends Ray)."""
        return self._owns_ray

    def wrap(self, body: Callable[[Any], Any], *, is_async: bool) -> Callable[[Any], Any]:
        """Return a coroutine function that runs `body(item)` on Ray (the `Backend` protocol).

        The coordinator runs it as a task on its event loop, so a body in flight on
        Ray costs a suspended task here, not a thread.

        Nothing touches Ray yet: the first call starts it (and the actor pool).

        Raises:
            RuntimeError: The backend was shut down.
        """
        with self._lock:
            if self._state is _State.SHUT_DOWN:
                raise RuntimeError("RayBackend is shut down; build a new one")
            wrapped = _Wrapped(self, body, is_async, self.actors)
            self._wrapped.add(wrapped)
        return wrapped

    def shutdown(self) -> None:
        """Kill this backend's actors; end Ray too if this backend started it.

        Close the coordinators that use the backend first: bodies still running fail.
        Idempotent.
        """
        with self._lock:
            if self._state is _State.SHUT_DOWN:
                return
            started = self._state is _State.STARTED
            self._state = _State.SHUT_DOWN
            wrapped = list(self._wrapped)
            self._wrapped.clear()
            relay, self._relay = self._relay, None
            thread = self._relay_thread
        if started and ray.is_initialized():
            for w in wrapped:
                w.close()
            if relay is not None:
                with contextlib.suppress(Exception):
                    ray.kill(relay)
        if thread is not None:
            thread.join(_RELAY_WAIT + 5.0)
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.stop()
        elif self._owns_ray and ray.is_initialized():
            ray.shutdown()

    # -- running one item (a task on the coordinator's event loop) ---------------------------

    def start(self) -> None:
        """Initialise Ray (unless it already is) and the relay actor now, not at the first item.

        Starting a local Ray takes seconds; call this at start-up to keep that off the
        first item's latency. Idempotent.

        Raises:
            RuntimeError: The backend was shut down.
        """
        with self._lock:
            if self._state is _State.SHUT_DOWN:
                raise RuntimeError("RayBackend is shut down; build a new one")
            if self._state is _State.STARTED and ray.is_initialized():
                return
            if not ray.is_initialized():
                self._init_ray_locked()
                for w in list(self._wrapped):
                    w.reset()  # handles from an earlier Ray session are dead
            relay = ray.remote(num_cpus=0)(_SignalRelay)
            self._relay = relay.options(name=self._relay_name).remote(_RELAY_CAPACITY)
            self._state = _State.STARTED

    def _init_ray_locked(self) -> None:
        options = self._init_options()
        if threading.current_thread() is threading.main_thread():
            ray.init(**options)
        else:
            # On Linux, Ray's head processes die when the *thread* that started them
            # exits (PR_SET_PDEATHSIG), and the first item starts Ray from a helper
            # thread of the coordinator's event loop, or from a coordinator worker
            # thread, either of which may end any time: start Ray on a thread of our
            # own that lives until shutdown().
            owner = _RayOwner(options)
            owner.start_ray()
            self._owner = owner
        self._owns_ray = True

    def _init_options(self) -> dict[str, Any]:
        if self.address is not None and self.address.startswith("ray://"):
            return {"address": self.address}  # Ray Client forwards unknown options
        options: dict[str, Any] = {
            "address": self.address,
            "include_dashboard": False,
            "ignore_reinit_error": True,
        }
        if self.num_cpus is not None:
            options["num_cpus"] = self.num_cpus
        return options

    async def _run(self, wrapped: _Wrapped, item: Any) -> Any:
        if self._state is not _State.STARTED or not ray.is_initialized():
            # Starting a local Ray takes seconds: not on the coordinator's event loop.
            await asyncio.to_thread(self.start)
        op = running_operation()
        ref, slot = wrapped.submit(item, op)
        call = None if op is None else Call(op)
        with self._lock:
            self._submitted += 1
            self._in_flight += 1
            if call is not None:
                self._calls[call.op.id] = call
                self._start_relay_thread_locked()
        try:
            outcome, value, events = await self._await(wrapped, ref, op, slot)
        finally:
            with self._lock:
                self._in_flight -= 1
                if call is not None:
                    del self._calls[call.op.id]
        if call is not None:
            call.offer(events, final=True)
        if outcome == _OK:
            return value
        if outcome == _RAISED:
            raise value
        raise OperationCancelledError(f"operation {_op_id(op)} was cancelled on Ray")

    def _task_for(self, body: Callable[[Any], Any], is_async: bool) -> Any:
        """The Ray remote function that runs `body`.

        Each remote function is exported to the cluster once and cached by every
        worker that runs it, the cheapest way to call a body (its captured state
        travels once, not with every item). Module-level functions, which capture
        nothing and live as long as their module, get one remote function per backend,
        so short-lived coordinators of the same body (`for_each` calls) do not export
        a new one each time. Other bodies (closures, lambdas, partials, bound methods)
        get one per coordinator: caching them would keep what they capture alive.
        """
        if not (inspect.isfunction(body) and "<" not in body.__qualname__):
            return _remote(_make_task_runner(body, is_async, self._relay_name), self._task_options)
        with self._lock:
            task = self._tasks.get((body, is_async))
            if task is None:
                runner = _make_task_runner(body, is_async, self._relay_name)
                task = self._tasks[body, is_async] = _remote(runner, self._task_options)
            return task

    def _start_relay_thread_locked(self) -> None:
        # The thread runs while any body is in flight and ends soon after the last one.
        if self._relay_thread is None and self._relay is not None:
            self._relay_thread = threading.Thread(
                target=self._relay_loop,
                args=(self._relay,),
                name=f"ray-backend-relay-{self._relay_name[-12:]}",
                daemon=True,
            )
            self._relay_thread.start()

    async def _await(
        self, wrapped: _Wrapped, ref: Any, op: Operation | None, slot: _Slot | None
    ) -> tuple[int, Any, list[_Event]]:
        """Await the outcome, cancelling the remote work once `op` is cancelled."""
        outcome = asyncio.wrap_future(ref.future())
        try:
            if op is not None:
                while not op.cancelled:
                    done, _ = await asyncio.wait((outcome,), timeout=_POLL_INTERVAL)
                    if done:
                        break
                else:
                    with contextlib.suppress(Exception):
                        ray.cancel(ref)
            return cast("tuple[int, Any, list[_Event]]", await outcome)
        except asyncio.CancelledError:
            # This task was cancelled (its event loop is closing): so is the remote work.
            with contextlib.suppress(Exception):
                ray.cancel(ref)
            raise
        except ray.exceptions.TaskCancelledError as exc:
            raise OperationCancelledError(
                f"operation {_op_id(op)} was cancelled on Ray before it returned"
            ) from exc
        except ray.exceptions.RayTaskError as exc:
            # The runner itself failed (an unpicklable result, a body Ray could not
            # import there): surface what went wrong, with its original type.
            cause = exc.cause if isinstance(exc.cause, BaseException) else None
            if cause is None:
                raise
            raise cause from exc
        except _LOST_WORKER as exc:
            if slot is not None and isinstance(exc, ray.exceptions.RayActorError):
                wrapped.replace(slot, op, exc)
            raise WorkerCrashError(
                f"the Ray worker running operation {_op_id(op)} was lost "
                f"({type(exc).__name__}); the body may or may not have run to the end"
            ) from exc
        finally:
            if slot is not None:
                wrapped.release(slot)

    def _relay_loop(self, relay: Any) -> None:
        """Replay relayed events on their local operations while any body runs."""
        while True:
            try:
                batch = ray.get(relay.pull.remote(_RELAY_WAIT))
            except Exception as exc:
                with self._lock:
                    self._relay_thread = None
                    if self._state is _State.SHUT_DOWN:
                        return
                    # Signals now travel only with each body's return value.
                    self._relay = None
                logger.warning(
                    "RayBackend: the live signal relay failed (%s); signals now arrive "
                    "when each body returns",
                    type(exc).__name__,
                    extra={
                        "coordinator": None,
                        "operation_id": None,
                        "key": None,
                        "error_type": type(exc).__name__,
                        "event": "ray.relay.lost",
                    },
                )
                return
            by_op: dict[int, list[_Event]] = {}
            for op_id, event in batch:
                by_op.setdefault(op_id, []).append(event)
            for op_id, events in by_op.items():
                with self._lock:
                    call = self._calls.get(op_id)
                if call is not None:
                    call.offer(events)
            with self._lock:
                if not self._calls or self._state is _State.SHUT_DOWN:
                    self._relay_thread = None
                    return


def _remote(target: Any, options: Mapping[str, Any]) -> Any:
    """`ray.remote` of `target` with `options` (which may be empty)."""
    return ray.remote(**options)(target) if options else ray.remote(target)


def _op_id(op: Operation | None) -> int:
    return op.id if op is not None else 0


# Users import it as `ephemeral_actors.backends.RayBackend` (loaded lazily there); that is
# the path tracebacks and pickles should name, not this private module.
publish("ephemeral_actors.backends", globals(), __all__)
