"""The worker-process side of `ProcessBackend`: a lane's loop, and the wire format.

Everything here except the frame helpers runs in a lane's worker process. The
process is started with `_lane_main` as its target and one end of a socket pair; it
reads jobs from it, runs them one at a time and writes back each job's outcome (and,
while a body runs, the events it emits). The backend reads the other end on its
event loop (see `ephemeral_actors.backends._process`).

Frames, both ways: an 8-byte big-endian length, then that many bytes. A frame of
length 0 from the backend asks the process to exit. A job is a pickled tuple
`(seq, token, body_bytes, item_bytes, op_id, key)`. From the process, a frame is a
one-byte tag, the job's 8-byte `seq`, then a payload: `_RESULT` with the pickled
`(outcome, value, events)`, or `_EVENT` with one pickled event.
"""

from __future__ import annotations

import collections
import contextlib
import pickle
import struct
import threading
import types
from typing import TYPE_CHECKING, Any, Final, cast

from ephemeral_actors._operation import Operation, _current
from ephemeral_actors.backends._relay import Event, RecordingOperation, portable_error

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from multiprocessing.synchronize import Lock as ProcessLock

__all__: list[str] = []

PROTOCOL: Final = pickle.HIGHEST_PROTOCOL
LENGTH: Final = struct.Struct("!Q")
"""A frame's length prefix."""
REPLY: Final = struct.Struct("!cQ")
"""The start of a frame from a worker process: its tag and the job's sequence number."""
RESULT: Final = b"R"
EVENT: Final = b"E"
STOP: Final = LENGTH.pack(0)
"""The frame that asks a worker process to exit once it has read every job before it."""

# Outcomes a worker returns, with the value and the body's events.
OK: Final = 0
RAISED: Final = 1
SKIPPED: Final = 2
"""The job was withdrawn before the process started it; its body did not run."""

# The lane's shared integers (a RawArray of 3): the sequence number of the last job
# its process started, and two slots of withdrawn jobs (a lane holds at most two,
# with consecutive numbers, so seq % 2 picks the slot).
STARTED: Final = 0
WITHDRAWN: Final = 1

_BODY_CACHE: Final = 64
"""Bodies each worker process keeps unpickled (least recently used dropped first)."""

_sock: socket.socket | None = None
"""This process's end of its lane's socket (set by `_lane_main`)."""
_send_lock = threading.Lock()
"""Held for each frame written: a body's own threads may signal while it runs."""
_bodies: collections.OrderedDict[str, Callable[[Any], Any]] = collections.OrderedDict()
"""Unpickled bodies by wrap token, so a body is unpickled once per process, not per item."""


def frame(payload: bytes) -> bytes:
    """`payload` with its length prefix (one buffer, so a small frame is one write)."""
    return LENGTH.pack(len(payload)) + payload


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    """Read `size` bytes from blocking `sock`; None at end of file."""
    chunks: list[bytes] = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _send(tag: bytes, seq: int, payload: bytes) -> None:
    sock = _sock
    assert sock is not None
    data = LENGTH.pack(REPLY.size + len(payload)) + REPLY.pack(tag, seq) + payload
    with _send_lock:
        sock.sendall(data)


def _lane_main(sock: socket.socket, lock: ProcessLock, state: Any) -> None:
    """A lane's worker process: run the jobs the backend sends, one at a time, until told to stop.

    Under the lane lock, a withdrawn job is skipped and any other is marked started
    before its body runs. The backend holds that lock while it decides to kill this
    process or withdraw a job, so neither can race with the start of the next job.
    """
    global _sock  # noqa: PLW0603 - one lane per worker process
    _sock = sock
    sock.setblocking(True)
    while True:
        try:
            header = _read_exactly(sock, LENGTH.size)
            size = LENGTH.unpack(header)[0] if header is not None else 0
            data = _read_exactly(sock, size) if size else None
        except OSError:  # the backend is gone
            return
        if data is None:
            return
        job = pickle.loads(data)  # noqa: S301 - the backend's bytes
        seq = job[0]
        with lock:
            skip = state[WITHDRAWN + seq % 2] == seq
            if not skip:
                state[STARTED] = seq
        payload = _SKIPPED_BYTES if skip else _run_job(*job)
        try:
            _send(RESULT, seq, payload)
        except OSError:
            return


class _ChildOperation(RecordingOperation):
    """`current_operation()` for a body running in a worker process.

    Each event is written to the lane's socket as it happens; all of them also
    return with the outcome. `cancelled` is always False: a body in a worker process
    is never asked to stop.
    """

    __slots__ = ("_seq",)

    where = "in a worker process"

    def __init__(self, op_id: int, key: str | None, seq: int) -> None:
        super().__init__(op_id, key)
        self._seq = seq

    def push(self, event: Event) -> None:
        """Send `event` to the backend now (best effort: the outcome carries it too)."""
        try:
            data = pickle.dumps(event, PROTOCOL)
        except Exception:
            return
        with contextlib.suppress(OSError):
            _send(EVENT, self._seq, data)


def _run_job(  # noqa: PLR0917 - the job tuple, unpacked
    seq: int, token: str, body_bytes: bytes, item_bytes: bytes, op_id: int, key: str | None
) -> bytes:
    """Run one item; return the pickled (outcome, value, events)."""
    body = _bodies.get(token)
    if body is None:
        try:
            body = _bodies[token] = pickle.loads(body_bytes)  # noqa: S301 - our own bytes
        except BaseException as exc:
            return pack(RAISED, portable_error(exc, "a worker process"), [])
        if len(_bodies) > _BODY_CACHE:
            _bodies.popitem(last=False)
    else:
        _bodies.move_to_end(token)
    op = _ChildOperation(op_id, key, seq) if op_id else None
    events = op.events if op is not None else []
    reset = _current.set(cast("Operation | None", op))  # a duck-typed stand-in
    try:
        item = pickle.loads(item_bytes)  # noqa: S301 - pickled by the backend
        result = body(item)
        if type(result) is types.CoroutineType:
            result.close()
            raise TypeError(  # noqa: TRY301 - reported like any body failure
                "the body returned a coroutine; ProcessBackend runs plain (def) bodies"
            )
    except BaseException as exc:
        return pack(RAISED, portable_error(exc, "a worker process"), events)
    finally:
        _current.reset(reset)
    return pack(OK, result, events)


def pack(outcome: int, value: Any, events: list[Event]) -> bytes:
    """Pickle an outcome; a value that cannot be pickled becomes the item's failure."""
    with contextlib.suppress(Exception):
        return pickle.dumps((outcome, value, events), PROTOCOL)
    with contextlib.suppress(Exception):  # an event's cause does not pickle: drop them
        return pickle.dumps((outcome, value, []), PROTOCOL)
    try:
        pickle.dumps(value, PROTOCOL)
    except Exception as why:
        error: BaseException = TypeError(
            f"the body's {'result' if outcome == OK else 'exception'}, a "
            f"{type_name(value)}, cannot be pickled to leave the worker process "
            f"({type(why).__name__}: {why})"
        )
    else:  # pragma: no cover - the value pickles alone but not with its events
        error = RuntimeError("the body's outcome cannot be pickled")
    with contextlib.suppress(Exception):
        return pickle.dumps((RAISED, error, events), PROTOCOL)
    return pickle.dumps((RAISED, error, []), PROTOCOL)


def type_name(value: Any) -> str:
    """`value`'s type as `module.Qualname` (just `Qualname` for builtins)."""
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


_SKIPPED_BYTES: Final = pickle.dumps((SKIPPED, None, []), PROTOCOL)
