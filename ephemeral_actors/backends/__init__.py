"""Execution backends: where a coordinator's bodies run (SPEC section 13).

The coordinator — supervision, ordering, limits, window, signals — always stays in
this process. A backend only decides where the *body* executes. Choose one per
coordinator with `CoordinatorOptions(backend=...)`; the default (`None`) runs bodies
in-process.

A backend is any object with `wrap(body, *, is_async) -> Callable[[item], result]`.
The returned callable is either a plain callable, which the coordinator runs on a
worker thread and which blocks until the body's outcome is back, or a coroutine
function (an `async def` function, or an object whose `__call__` is one), which the
coordinator runs as a task on its event loop — a body in flight then costs a
suspended task, not a thread. Either way it returns the body's result or raises its
exception, and should watch `current_operation().cancelled` to cancel remote work.
A wrapped callable with a `close()` method is closed when its coordinator closes.

Optional hooks, looked up on the backend by name when a coordinator is built:
`prepare_item(item)` returns what the wrapped body will receive for `item` (say, the
item already serialised) and raises `TypeError` for an item the backend cannot ship;
without it, `check_item(item)` only raises. Either is called at intake, in the
caller's thread, on the item as given (a keyed coordinator takes the key from that
too). `cancel(op_id) -> bool` withdraws the remote work of an operation asked to
cancel; `kill(op_id) -> bool` stops an operation's body at once, and is called when
the operation passes `item_timeout`: when it answers True the attempt ends with what
the wrapped body then raises (`OperationCancelledError` counts as the timeout), else
the task awaiting it is cancelled. `ProcessBackend` has all of them.

`ProcessBackend` (worker processes, standard library only) needs no extra.
Backends that need an optional dependency are imported on first use, by name:
`from ephemeral_actors.backends import RayBackend` needs the `ray` extra
(`pip install 'ephemeral_actors[ray]'`) and raises `ImportError` saying so without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ephemeral_actors._public import publish
from ephemeral_actors.backends._process import ProcessBackend

if TYPE_CHECKING:
    from collections.abc import Callable

    # The real class for type checkers; at run time __getattr__ imports it on first use.
    from ephemeral_actors.backends._ray import RayBackend as RayBackend

# RayBackend is left out of __all__: a star import must not need the optional extra.
__all__ = ["Backend", "InProcessBackend", "ProcessBackend"]

_OPTIONAL = {"RayBackend": ("ephemeral_actors.backends._ray", "ray")}
"""Backends behind an extra: name -> (module, extra = the distribution it needs)."""


def __getattr__(name: str) -> Any:
    """Import an optional backend on first use (PEP 562), naming its extra if missing."""
    try:
        module_name, extra = _OPTIONAL[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    import importlib  # noqa: PLC0415

    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or ""
        if missing != extra and not missing.startswith(f"{extra}."):
            raise  # something else is broken; do not hide it behind the extra's name
        raise ImportError(
            f"{name} needs the optional dependency {extra!r}, which is not installed: "
            f"pip install 'ephemeral_actors[{extra}]'",
            name=extra,
        ) from exc
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted([*__all__, *_OPTIONAL])


@runtime_checkable
class Backend(Protocol):
    """Runs bodies somewhere; the coordinator keeps everything else."""

    def wrap(self, body: Callable[[Any], Any], *, is_async: bool) -> Callable[[Any], Any]:
        """Return a callable that runs `body(item)` on this backend.

        Either a blocking callable (run on a coordinator worker thread) or a
        coroutine function (run as a task on the coordinator's event loop).
        """
        ...


class InProcessBackend:
    """The default: bodies run in this process, on the coordinator's own workers."""

    def wrap(self, body: Callable[[Any], Any], *, is_async: bool) -> Callable[[Any], Any]:  # noqa: ARG002
        """Return `body` unchanged: the coordinator runs it (coroutines on its loop)."""
        return body

    def __repr__(self) -> str:
        return "InProcessBackend()"


publish(__name__, globals(), __all__)
