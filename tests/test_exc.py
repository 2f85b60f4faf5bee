"""Exceptions kept in the window: `detach` and `copy_error` (issue 13, finding 18)."""

from __future__ import annotations

import errno
import pickle
from collections.abc import Callable
from typing import Any, Self

import pytest

from ephemeral_actors import CoordinatorOptions, ResultCoordinator, WorkCoordinator
from ephemeral_actors._exc import copy_error, detach
from tests.conftest import WAIT


def raised(error: BaseException) -> BaseException:
    """Return `error` after raising and catching it, so it carries a traceback."""
    try:
        raise error
    except BaseException as caught:
        return caught


class TwoArguments(Exception):
    """A custom __init__ whose args are a message built from its arguments."""

    def __init__(self, n: int, m: int) -> None:
        super().__init__(f"n={n}")
        self.n = n
        self.m = m


class MissingFile(OSError):
    """An OSError subclass that cannot be rebuilt from its reduced args."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.ENOENT, "missing", path)


class Slotted(Exception):
    """A field kept in __slots__, not in __dict__."""

    __slots__ = ("level",)

    def __init__(self, level: int) -> None:
        super().__init__("slotted")
        self.level = level


class UncopyableReduce(Exception):
    """copy.copy raises; the fallback still copies it."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __reduce__(self) -> Any:
        raise RuntimeError("no reduce")


class Unbuildable(Exception):
    """Neither copy.copy nor cls.__new__(cls, *args) can make another one."""

    def __new__(cls, *args: Any, token: object = None) -> Self:
        if token is not _TOKEN:
            raise RuntimeError("needs the token")
        return super().__new__(cls, *args)

    def __init__(self, *args: Any, token: object = None) -> None:
        super().__init__(*args)

    def __copy__(self) -> Unbuildable:
        raise RuntimeError("no copy")


_TOKEN = object()

# (a factory for the error, the fields its twin must have)
CASES: list[tuple[Callable[[], BaseException], dict[str, Any]]] = [
    (lambda: SystemExit(3), {"code": 3, "args": (3,)}),
    (lambda: SystemExit("bye"), {"code": "bye"}),
    (KeyboardInterrupt, {"args": ()}),
    (
        lambda: OSError(2, "x", "f.txt"),
        {"errno": 2, "strerror": "x", "filename": "f.txt", "filename2": None, "args": (2, "x")},
    ),
    (
        lambda: OSError(1, "a", "b", None, "c"),
        {"errno": 1, "filename": "b", "filename2": "c"},
    ),
    (lambda: BlockingIOError(11, "w", 5), {"errno": 11, "characters_written": 5}),
    (
        lambda: UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
        {"encoding": "utf-8", "object": b"\xff", "start": 0, "end": 1, "reason": "bad"},
    ),
    (lambda: StopIteration(5), {"value": 5}),
    (lambda: AttributeError("a", name="n", obj=1), {"name": "n", "obj": 1}),
    (lambda: ImportError("m", name="mod", path="/p"), {"name": "mod", "path": "/p", "msg": "m"}),
    (lambda: SyntaxError("m", ("f.py", 1, 2, "t", 1, 3)), {"filename": "f.py", "lineno": 1}),
    (lambda: TwoArguments(1, 2), {"n": 1, "m": 2, "args": ("n=1",)}),
    (lambda: MissingFile("p"), {"errno": errno.ENOENT, "filename": "p", "args": (2, "missing")}),
    (lambda: Slotted(7), {"level": 7}),
    (lambda: UncopyableReduce("d"), {"detail": "d", "args": ("d",)}),
]


@pytest.mark.parametrize(
    ("make", "fields"),
    CASES,
    ids=[f"{type(make()).__name__}-{i}" for i, (make, _) in enumerate(CASES)],
)
def test_copy_keeps_every_field_and_drops_the_traceback(make, fields):
    """The twin has the same type, fields, str and repr; the original keeps its traceback."""
    original = raised(make())
    twin = copy_error(original)
    assert twin is not original
    assert type(twin) is type(original)
    for name, value in fields.items():
        assert getattr(twin, name) == value, name
    assert str(twin) == str(original)
    assert repr(twin) == repr(original)
    assert twin.__traceback__ is None
    assert original.__traceback__ is not None


def test_copy_keeps_instance_attributes_and_notes_without_sharing_them():
    """`__dict__` fields are copied; adding a note to one does not change the other."""
    original = raised(ValueError("v"))
    original.extra = {"k": 1}  # type: ignore[attr-defined]
    original.add_note("first")
    twin = copy_error(original)
    assert twin.extra == {"k": 1}  # type: ignore[attr-defined]
    assert twin.__notes__ == ["first"]
    twin.add_note("second")
    assert original.__notes__ == ["first"]


def test_copy_twins_the_chain_so_no_link_holds_a_frame():
    """`__cause__` and `__context__` become traceback-free twins; the originals keep theirs."""
    try:
        try:
            raise OSError(2, "inner", "a.txt")
        except OSError as inner:
            raise KeyError("outer") from inner
    except KeyError as outer:
        original = outer
    twin = copy_error(original)
    assert isinstance(twin.__cause__, OSError)
    assert twin.__cause__ is not original.__cause__
    assert twin.__cause__.filename == "a.txt"
    assert twin.__context__ is twin.__cause__
    assert twin.__suppress_context__
    assert twin.__cause__.__traceback__ is None
    assert original.__cause__ is not None
    assert original.__cause__.__traceback__ is not None


def test_copy_survives_a_cyclic_chain():
    """A chain that loops back is copied as a loop of twins, without recursing forever."""
    first, second = raised(ValueError(1)), raised(ValueError(2))
    first.__context__ = second
    second.__context__ = first
    twin = copy_error(first)
    assert twin.__context__ is not None
    assert twin.__context__.__context__ is twin


def test_copy_handles_a_chain_longer_than_the_recursion_limit():
    """A long context chain (a retry loop) is copied iteratively."""
    error: BaseException = ValueError(0)
    for i in range(1, 5000):
        nxt = ValueError(i)
        nxt.__context__ = error
        error = nxt
    twin = copy_error(error)
    depth = 0
    link: BaseException | None = twin
    while link is not None:
        depth += 1
        link = link.__context__
    assert depth == 5000


def test_copy_twins_exception_group_members():
    """A group is rebuilt around twins of its members, which hold no traceback."""
    members = [raised(OSError(2, "a", "b")), raised(SystemExit(4))]
    original = raised(BaseExceptionGroup("g", members))
    twin = copy_error(original)
    assert type(twin) is BaseExceptionGroup
    assert twin.message == "g"
    members = twin.exceptions
    assert [type(e) for e in members] == [FileNotFoundError, SystemExit]
    assert members[0].filename == "b"
    assert members[1].code == 4
    assert all(e.__traceback__ is None for e in members)
    assert all(e.__traceback__ is not None for e in original.exceptions)


def test_an_uncopyable_error_is_returned_itself():
    """When neither copying nor rebuilding works, the caller gets the original back."""
    original = Unbuildable("u", token=_TOKEN)
    assert copy_error(original) is original


def test_an_uncopyable_link_is_left_out_of_the_twins_chain():
    """A link that cannot be copied is dropped rather than shared with its frames."""
    original = raised(ValueError("top"))
    original.__cause__ = raised(Unbuildable("u", token=_TOKEN))
    twin = copy_error(original)
    assert twin is not original
    assert twin.__cause__ is None


def test_the_twin_pickles_like_the_original():
    """A twin is an ordinary exception: it round-trips through pickle."""
    twin = copy_error(raised(OSError(2, "x", "f.txt")))
    again = pickle.loads(pickle.dumps(twin))
    assert (again.errno, again.filename) == (2, "f.txt")


def test_detach_clears_every_link_and_group_member():
    """`detach` clears the traceback of the error, its cause, its context and members."""
    try:
        try:
            raise ValueError("context")
        except ValueError:
            try:
                raise OSError("cause")
            except OSError as cause:
                raise raised(ExceptionGroup("g", [raised(KeyError(1))])) from cause
    except ExceptionGroup as group:
        error = group
    assert error.__context__ is not None
    assert detach(error) is error
    assert error.__traceback__ is None
    assert error.__cause__ is not None
    assert error.__cause__.__traceback__ is None
    assert error.__context__.__traceback__ is None
    assert error.exceptions[0].__traceback__ is None


# -- through the public API ----------------------------------------------------------


def fail_with(error: BaseException) -> Callable[[Any], Any]:
    def body(_item: Any) -> Any:
        raise error

    return body


@pytest.mark.parametrize(
    ("error", "check"),
    [
        (SystemExit(3), lambda e: e.code == 3),
        (KeyboardInterrupt(), lambda e: isinstance(e, KeyboardInterrupt)),
        (
            OSError(2, "x", "f.txt"),
            lambda e: (e.errno, e.filename, str(e)) == (2, "f.txt", "[Errno 2] x: 'f.txt'"),
        ),
        (
            UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
            lambda e: str(e) == "'utf-8' codec can't decode byte 0xff in position 0: bad",
        ),
    ],
    ids=["SystemExit", "KeyboardInterrupt", "OSError", "UnicodeDecodeError"],
)
def test_submitted_failures_keep_their_fields_in_the_window(error, check):
    """Issue 13 #18: `get_failed()[0].error` of a submitted item keeps the error's fields."""
    with ResultCoordinator(fail_with(error), CoordinatorOptions(max_concurrency=1)) as c:
        future = c.submit(0)
        with pytest.raises(type(error)):
            future.get(timeout=WAIT)
        (snapshot,) = c.get_failed()
    kept = snapshot.error
    assert type(kept) is type(error)
    assert check(kept)
    assert kept.__traceback__ is None


def test_the_caller_keeps_the_original_with_its_traceback():
    """The future raises the original error (with traceback); the window has a twin."""
    error = OSError(2, "x", "f.txt")
    with WorkCoordinator(fail_with(error)) as c:
        future = c.submit(0)
        with pytest.raises(OSError) as info:
            future.get(timeout=WAIT)
        (snapshot,) = c.get_failed()
    assert info.value is error
    assert info.value.__traceback__ is not None
    assert snapshot.error is not error
    assert snapshot.error is not None
    assert snapshot.error.filename == "f.txt"  # type: ignore[attr-defined]
