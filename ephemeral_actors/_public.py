"""Public names report the module users import them from, not the private one.

A class defined in `ephemeral_actors._errors` and re-exported by `ephemeral_actors`
would print in every traceback as `ephemeral_actors._errors.CoordinatorClosedError`,
a path users should never import from, and pickles would name that private module,
so moving the class between private modules would break stored pickles. Each public
module calls `publish()` once over its `__all__` (as trio does with
`fixup_module_metadata`), so the rule holds for names added later without a list to
keep in sync.

Trade-off: on Python 3.11 and 3.12, `inspect.getsource()` of a published *class*
looks in the public module's file and fails; functions and methods are unaffected
(their code objects know their file).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["is_private_module", "publish"]


def is_private_module(module_name: str) -> bool:
    """True if any dotted component of `module_name` starts with an underscore."""
    return any(part.startswith("_") for part in module_name.split("."))


def publish(module_name: str, namespace: Mapping[str, object], names: Iterable[str]) -> None:
    """Set `__module__` of the classes and functions `names` to `module_name`.

    Only objects that still report a private module are changed: a class exported by
    two public modules keeps the first one that published it, and objects from other
    libraries (re-exported as a convenience) are never touched.

    Args:
        module_name: The public module, e.g. `"ephemeral_actors"`.
        namespace: That module's globals, where `names` are looked up.
        names: The module's `__all__`.
    """
    for name in names:
        obj = namespace[name]
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # constants, type aliases and type variables have no path to fix
        current = obj.__module__
        if current.startswith("ephemeral_actors.") and is_private_module(current):
            obj.__module__ = module_name
