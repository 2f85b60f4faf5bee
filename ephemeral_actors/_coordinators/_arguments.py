"""The keyed coordinator's two call forms (SPEC section 15, "Keyed argument order").

`KeyedWorkCoordinator(key_selector, body, ...)` is the original order;
`KeyedWorkCoordinator(body, key=key_selector, ...)` is the order `for_each` uses.
Both are accepted, and everything that could silently mix them up is refused:
passing both forms, and a key selector that is a coroutine function (the telltale
of `KeyedWorkCoordinator(async_body, key_selector)`: keys are computed when an item
is offered, synchronously, so a selector can never be `async`).
"""

from __future__ import annotations

import inspect
from typing import Any

from ephemeral_actors._options import CoordinatorOptions

__all__ = ["check_key_selector", "split_keyed_arguments"]

_MISSING: Any = object()


def check_key_selector(selector: object, *, argument: str = "key_selector") -> None:
    """Refuse a selector that is not callable or that is a coroutine function.

    Raises:
        TypeError: Naming the argument and the value.
    """
    if not callable(selector):
        raise TypeError(f"{argument} must be callable, got {type(selector).__name__} {selector!r}")
    if inspect.iscoroutinefunction(selector) or inspect.iscoroutinefunction(
        getattr(selector, "__call__", None)  # noqa: B004 - an object with an async __call__
    ):
        raise TypeError(
            f"{argument} must compute the key synchronously, but {selector!r} is a coroutine "
            "function; were body and key selector swapped? Use "
            "KeyedWorkCoordinator(key_selector, body) or KeyedWorkCoordinator(body, key=...)"
        )


def split_keyed_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any], *, where: str
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Sort a keyed call's arguments into key selector, body, options and option fields.

    Args:
        args: The positional arguments after `self` (or after `source`).
        kwargs: The keyword arguments; `key`, `key_selector`, `body` and `options`
            are taken out, the rest are option fields for `merge_options`.
        where: The public callable's name, for error messages.

    Returns:
        `(key_selector, body, options, option_fields)`, with the selector checked.

    Raises:
        TypeError: Both forms were used, an argument is missing or given twice, or
            the selector is not a plain callable.
    """
    option_fields = dict(kwargs)
    key = option_fields.pop("key", None)
    named = {
        name: option_fields.pop(name, _MISSING) for name in ("key_selector", "body", "options")
    }
    both = (
        f"{where}() takes the key selector either first or as key=, not both: "
        f"{where}(key_selector, body, ...) or {where}(body, key=key_selector, ...)"
    )
    if key is not None and named["key_selector"] is not _MISSING:
        raise TypeError(both)
    params = ("body", "options") if key is not None else ("key_selector", "body", "options")
    if len(args) > len(params):
        if key is not None:
            raise TypeError(both)
        raise TypeError(
            f"{where}() takes at most {len(params)} positional arguments ({len(args)} given)"
        )
    values = dict(zip(params, args, strict=False))
    for name, value in named.items():
        if value is _MISSING:
            continue
        if name in values:
            raise TypeError(f"{where}() got multiple values for argument {name!r}")
        values[name] = value
    if key is not None:
        options = values.get("options")
        if callable(options) and not isinstance(options, CoordinatorOptions):
            # KeyedWorkCoordinator(selector, body, key=selector): the body sits where
            # the options belong, so the selector was given both ways.
            raise TypeError(both)
        values["key_selector"] = key
    missing = [name for name in ("key_selector", "body") if name not in values]
    if missing:
        raise TypeError(
            f"{where}() missing required argument {missing[0]!r} "
            f"(call it as {where}(key_selector, body, ...) or {where}(body, key=...))"
        )
    check_key_selector(
        values["key_selector"], argument="key" if key is not None else "key_selector"
    )
    return values["key_selector"], values["body"], values.get("options"), option_fields
