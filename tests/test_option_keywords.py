"""Options as keywords and the keyed argument forms (SPEC 15)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import typing
from collections.abc import Callable
from typing import Any

import pytest

from ephemeral_actors import (
    CoordinatorOptions,
    KeyedWorkCoordinator,
    ResultCoordinator,
    RetryPolicy,
    WorkCoordinator,
    for_each,
    for_each_async,
)
from ephemeral_actors._options import OptionsKwargs, merge_options
from tests.conftest import WAIT


def noop(_item: object) -> None:
    return None


async def anoop(_item: object) -> None:
    return None


def first(text: str) -> str:
    return text[0]


async def async_first(text: str) -> str:
    return text[0]


# Every public callable that takes option keywords, called with one keyword `extra`.
BUILDERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "WorkCoordinator": lambda kw: WorkCoordinator(noop, **kw),
    "ResultCoordinator": lambda kw: ResultCoordinator(noop, **kw),
    "KeyedWorkCoordinator": lambda kw: KeyedWorkCoordinator(first, noop, **kw),
    "KeyedWorkCoordinator(key=)": lambda kw: KeyedWorkCoordinator(noop, key=first, **kw),
    "WorkCoordinator.from_iterable": lambda kw: WorkCoordinator.from_iterable([], noop, **kw),
    "ResultCoordinator.from_iterable": lambda kw: ResultCoordinator.from_iterable([], noop, **kw),
    "KeyedWorkCoordinator.from_iterable": lambda kw: KeyedWorkCoordinator.from_iterable(
        [], first, noop, **kw
    ),
    "KeyedWorkCoordinator.from_iterable(key=)": lambda kw: KeyedWorkCoordinator.from_iterable(
        [], noop, key=first, **kw
    ),
}


def close_if_built(value: object) -> None:
    if isinstance(value, WorkCoordinator | ResultCoordinator | KeyedWorkCoordinator):
        value.complete()
        value.close(WAIT)


@pytest.mark.parametrize("builder", BUILDERS.values(), ids=BUILDERS.keys())
def test_option_fields_are_accepted_as_keywords(builder):
    """`WorkCoordinator(body, max_concurrency=3, name=...)` builds those options."""
    coordinator = builder({"max_concurrency": 3, "name": "kw"})
    try:
        assert coordinator.options.max_concurrency == 3
        assert coordinator.max_concurrency == 3
        assert coordinator.name == "kw"
    finally:
        close_if_built(coordinator)


@pytest.mark.parametrize("builder", BUILDERS.values(), ids=BUILDERS.keys())
def test_options_and_keywords_merge_keywords_win(builder):
    """options= gives the base, keywords override field by field."""
    base = CoordinatorOptions(max_concurrency=2, name="base", max_tracked_operations=7)
    coordinator = builder({"options": base, "max_concurrency": 5})
    try:
        assert coordinator.options.max_concurrency == 5
        assert coordinator.options.name == "base"
        assert coordinator.options.max_tracked_operations == 7
    finally:
        close_if_built(coordinator)


@pytest.mark.parametrize("builder", BUILDERS.values(), ids=BUILDERS.keys())
def test_unknown_keyword_names_it_and_suggests(builder):
    """A misspelt option is a TypeError naming it and listing the close matches."""
    with pytest.raises(TypeError) as raised:
        close_if_built(builder({"max_concurency": 3}))
    message = str(raised.value)
    assert "'max_concurency'" in message
    assert "did you mean 'max_concurrency'" in message


def test_unknown_keyword_without_close_match_says_it_is_no_field():
    """A keyword nothing resembles is still named, and said not to be an option."""
    with pytest.raises(TypeError, match=r"WorkCoordinator\(\) got an unexpected keyword .*'zzz'"):
        WorkCoordinator(noop, zzz=1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("build", "hint"),
    [
        (lambda: CoordinatorOptions(max_concurency=3), "did you mean 'max_concurrency'"),
        (lambda: CoordinatorOptions(zzz=1), "it is not a CoordinatorOptions field"),
        # The names other retry libraries use.
        (lambda: RetryPolicy(max_attempts=3), "did you mean 'attempts'"),
        (lambda: RetryPolicy(backof=1.0), "did you mean 'backoff'"),
    ],
)
def test_records_built_directly_name_an_unknown_keyword_and_suggest(build, hint):
    """`CoordinatorOptions(...)` and `RetryPolicy(...)` answer a misspelt field as the
    coordinators' keywords do, not with the bare error of a dataclass."""
    with pytest.raises(TypeError) as raised:
        build()
    message = str(raised.value)
    assert message.startswith(("CoordinatorOptions() got an unexpected", "RetryPolicy() got an"))
    assert hint in message


@pytest.mark.parametrize("cls", [CoordinatorOptions, RetryPolicy])
def test_records_keep_their_signature_copies_and_pickles(cls):
    """The check changes nothing else: the signature lists the fields, and a record
    copies, pickles and `replace`s as before."""
    import copy  # noqa: PLC0415
    import inspect  # noqa: PLC0415
    import pickle  # noqa: PLC0415

    parameters = inspect.signature(cls).parameters
    assert list(parameters) == [f.name for f in dataclasses.fields(cls)]
    record = cls()
    assert copy.copy(record) == record
    assert pickle.loads(pickle.dumps(record)) == record
    field = dataclasses.fields(cls)[0].name
    assert getattr(dataclasses.replace(record, **{field: 2}), field) == 2


def test_keywords_are_validated_like_options():
    """A bad value given as a keyword is refused by the field's own validation."""
    with pytest.raises(ValueError, match="max_concurrency"):
        WorkCoordinator(noop, max_concurrency=0)


def test_keywords_without_options_keep_the_default_factories():
    """Fields not given keep their defaults (max_concurrency still follows the CPU count)."""
    merged = merge_options(None, {"name": "x"}, where="test")
    assert merged == CoordinatorOptions(name="x")
    assert merge_options(None, {}, where="test") == CoordinatorOptions()
    base = CoordinatorOptions(max_concurrency=2)
    assert merge_options(base, {}, where="test") is base


def test_options_of_the_wrong_type_are_refused_with_keywords_too():
    """options= must still be a CoordinatorOptions when keywords come along."""
    with pytest.raises(TypeError, match="options must be a CoordinatorOptions"):
        WorkCoordinator(noop, {"max_concurrency": 2}, name="x")  # type: ignore[arg-type]


def test_for_each_takes_option_keywords():
    """for_each(items, body, max_concurrency=2) runs with that limit and rejects typos."""
    running = 0
    peak = 0
    lock = threading.Lock()

    def body(_item: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        threading.Event().wait(0.005)
        with lock:
            running -= 1

    stats = for_each(range(20), body, max_concurrency=2, name="loop")
    assert stats.max_concurrency == 2
    assert stats.total_completed == 20
    assert peak <= 2
    with pytest.raises(TypeError, match=r"for_each\(\) .*'max_concurrenc'.*did you mean"):
        for_each([1], noop, max_concurrenc=2)  # type: ignore[call-arg]


def test_for_each_async_takes_option_keywords():
    """for_each_async accepts option keywords too, merged over options=."""

    async def main() -> Any:
        return await for_each_async(
            range(5), anoop, CoordinatorOptions(max_concurrency=1), max_concurrency=3
        )

    stats = asyncio.run(main())
    assert stats.max_concurrency == 3
    assert stats.total_completed == 5

    async def typo() -> Any:
        return await for_each_async([1], anoop, max_concurency=3)  # type: ignore[call-arg]

    with pytest.raises(TypeError, match=r"for_each_async\(\) .*did you mean"):
        asyncio.run(typo())


def test_typed_dict_mirrors_the_options_dataclass():
    """OptionsKwargs has exactly the CoordinatorOptions fields, with the same annotations."""
    fields = {f.name: f.type for f in dataclasses.fields(CoordinatorOptions)}
    hints = {
        name: getattr(annotation, "__forward_arg__", annotation)
        for name, annotation in OptionsKwargs.__annotations__.items()
    }
    assert list(hints) == list(fields)
    assert hints == fields
    assert OptionsKwargs.__required_keys__ == frozenset()
    assert typing.is_typeddict(OptionsKwargs)


# -- the keyed argument forms -----------------------------------------------------------


def run_keyed(coordinator: KeyedWorkCoordinator[str, str], items: list[str]) -> None:
    with coordinator:
        for item in items:
            coordinator.enqueue(item)


def test_keyed_accepts_body_first_with_key_keyword():
    """KeyedWorkCoordinator(body, key=selector) keys items by the selector, in order per key."""
    seen: list[str] = []
    lock = threading.Lock()

    def body(item: str) -> None:
        with lock:
            seen.append(item)

    coordinator = KeyedWorkCoordinator(body, key=first, max_concurrency=4)
    items = [f"{k}{i}" for i in range(10) for k in "abc"]
    run_keyed(coordinator, items)
    for k in "abc":
        assert [s for s in seen if s[0] == k] == [f"{k}{i}" for i in range(10)]
    assert {s.key for s in coordinator.get_snapshot()} == {"a", "b", "c"}


def test_keyed_keeps_the_selector_first_form():
    """KeyedWorkCoordinator(selector, body, options) still works, keyword names too."""
    for coordinator in (
        KeyedWorkCoordinator(first, noop, CoordinatorOptions(max_concurrency=2)),
        KeyedWorkCoordinator(key_selector=first, body=noop, max_concurrency=2),
    ):
        run_keyed(coordinator, ["x1", "y1"])
        assert {s.key for s in coordinator.get_snapshot()} == {"x", "y"}


def test_keyed_from_iterable_with_key_keyword():
    """from_iterable(source, body, key=...) feeds a keyed coordinator."""
    coordinator = KeyedWorkCoordinator.from_iterable(["a1", "b1", "a2"], noop, key=first)
    try:
        coordinator.drain(WAIT)
        assert sorted(s.key for s in coordinator.get_snapshot()) == ["a", "a", "b"]
    finally:
        coordinator.close(WAIT)


@pytest.mark.parametrize(
    "call",
    [
        lambda: KeyedWorkCoordinator(first, noop, key=first),  # type: ignore[call-overload]
        lambda: KeyedWorkCoordinator(noop, key=first, key_selector=first),  # type: ignore[call-overload]
        lambda: KeyedWorkCoordinator(first, noop, None, key=first),  # type: ignore[call-overload]
        lambda: KeyedWorkCoordinator.from_iterable([], first, noop, key=first),  # type: ignore[call-overload]
    ],
    ids=["positional+key", "key_selector+key", "three positionals+key", "from_iterable"],
)
def test_both_keyed_forms_at_once_is_a_type_error(call):
    """Giving the selector first and as key= is refused, never guessed."""
    with pytest.raises(TypeError, match="either first or as key=, not both"):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: KeyedWorkCoordinator(async_first, noop),
        lambda: KeyedWorkCoordinator(
            anoop, first
        ),  # swapped: the async body is taken as the selector
        lambda: KeyedWorkCoordinator(noop, key=async_first),
        lambda: KeyedWorkCoordinator.from_iterable([], anoop, first),
        lambda: for_each(["a"], noop, key=async_first),
    ],
    ids=["selector", "swapped", "key=", "from_iterable", "for_each"],
)
def test_a_coroutine_function_key_selector_is_a_type_error(call):
    """Keys are computed synchronously, so an async selector (often a swap) is refused."""
    with pytest.raises(TypeError, match="coroutine function"):
        call()


def test_an_object_with_async_call_is_refused_as_selector():
    """An instance whose __call__ is async is a coroutine function in disguise."""

    class Selector:
        async def __call__(self, item: str) -> str:
            return item

    with pytest.raises(TypeError, match="coroutine function"):
        KeyedWorkCoordinator(Selector(), noop)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: KeyedWorkCoordinator(first), "missing required argument 'body'"),  # type: ignore[call-overload]
        (lambda: KeyedWorkCoordinator(key=first), "missing required argument 'body'"),  # type: ignore[call-overload]
        (
            lambda: KeyedWorkCoordinator(first, noop, body=noop),
            "multiple values for argument 'body'",
        ),  # type: ignore[call-overload]
        (lambda: KeyedWorkCoordinator(first, noop, None, None), "at most 3 positional"),  # type: ignore[call-overload]
        (lambda: KeyedWorkCoordinator(5, noop), "key_selector must be callable"),  # type: ignore[call-overload]
        (lambda: for_each(["a"], noop, key=5), "key must be callable"),  # type: ignore[arg-type]
    ],
)
def test_keyed_argument_errors_say_what_is_wrong(call, match):
    """Missing, doubled, surplus and non-callable arguments are TypeErrors that say so."""
    with pytest.raises(TypeError, match=match):
        call()
