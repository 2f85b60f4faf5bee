"""Execution backends: where a coordinator's bodies run (SPEC section 13).

The coordinator — supervision, ordering, limits, window, signals — always stays in
this process. A backend only decides where the *body* executes. Choose one per
coordinator with `CoordinatorOptions(backend=...)`; the default (`None`) runs bodies
in-process.

A backend is any object with `wrap(body, *, is_async) -> Callable[[item], result]`:
the returned callable runs on a worker thread, blocks until the body's outcome is
back, returns its result or raises its exception, and should watch
`current_operation().cancelled` to cancel remote work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Backend", "InProcessBackend"]


@runtime_checkable
class Backend(Protocol):
    """Runs bodies somewhere; the coordinator keeps everything else."""

    def wrap(self, body: Callable[[Any], Any], *, is_async: bool) -> Callable[[Any], Any]:
        """Return a blocking callable that runs `body(item)` on this backend."""
        ...


class InProcessBackend:
    """The default: bodies run in this process, on the coordinator's own workers."""

    def wrap(self, body: Callable[[Any], Any], *, is_async: bool) -> Callable[[Any], Any]:  # noqa: ARG002
        """Return `body` unchanged: the coordinator runs it (coroutines on its loop)."""
        return body

    def __repr__(self) -> str:
        return "InProcessBackend()"
