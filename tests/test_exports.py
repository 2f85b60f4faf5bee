"""The public surface: exported names, error hierarchy, docstrings, typing marker (SPEC 2, 12)."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import enum
import importlib
import importlib.resources
import inspect

import pykka
import pytest

import ephemeral_actors
from ephemeral_actors import messages

SECTION_2_NAMES = (
    "CoordinatorOptions",
    "WorkCoordinator",
    "KeyedWorkCoordinator",
    "ResultCoordinator",
    "for_each",
    "for_each_async",
    "OperationSnapshot",
    "ResultSnapshot",
    "CoordinatorStats",
    "Operation",
    "current_operation",
    "SignalEvent",
    "SignalPropagation",
    "SignalConstraints",
    "SignalBlockReason",
    "SignalBus",
    "matches",
    "matches_any",
    "CoordinatorRegistry",
    "EphemeralError",
)

# Section 12: each error and the builtin it must also inherit (None: only EphemeralError).
SECTION_12_ERRORS: dict[str, type[BaseException] | None] = {
    "CoordinatorClosedError": RuntimeError,
    "CoordinatorNotCompletedError": RuntimeError,
    "CoordinatorFullError": None,
    "DynamicConcurrencyDisabledError": RuntimeError,
    "UnknownCoordinatorError": KeyError,
    "RegistryClosedError": RuntimeError,
    "NoCurrentOperationError": RuntimeError,
    "OperationCancelledError": None,
    "SignalCancelledError": None,
    "CoordinatorFaultedError": RuntimeError,
}

MESSAGE_NAMES = (
    "Enqueue",
    "Submit",
    "GetStats",
    "GetSnapshot",
    "Pause",
    "Resume",
    "Complete",
    "Cancel",
    "SetMaxConcurrency",
    "Pin",
    "Unpin",
    "Evict",
)


def test_all_is_a_sorted_tuple_of_importable_names():
    """ephemeral_actors.__all__ is a sorted tuple of unique names that all resolve."""
    names = ephemeral_actors.__all__
    assert isinstance(names, tuple)
    assert list(names) == sorted(names)
    assert len(set(names)) == len(names)
    for name in names:
        assert hasattr(ephemeral_actors, name), name
        assert not name.startswith("_")


def test_star_import_gives_exactly_all():
    """`from ephemeral_actors import *` binds exactly the names of __all__."""
    namespace: dict[str, object] = {}
    exec("from ephemeral_actors import *", namespace)
    namespace.pop("__builtins__", None)
    assert set(namespace) == set(ephemeral_actors.__all__)


@pytest.mark.parametrize("name", ephemeral_actors.__all__)
def test_exported_objects_have_docstrings(name):
    """Every exported object, and every public member of exported classes, has a docstring."""
    obj = getattr(ephemeral_actors, name)
    assert (inspect.getdoc(obj) or "").strip(), f"{name} has no docstring"
    if not inspect.isclass(obj) or issubclass(obj, (BaseException, enum.Enum)):
        return
    missing = []
    for member_name, _ in inspect.getmembers(obj):
        if member_name.startswith("_"):
            continue
        defined_in = next((k for k in obj.__mro__ if member_name in vars(k)), None)
        if defined_in is None or not defined_in.__module__.startswith("ephemeral_actors"):
            continue
        raw = vars(defined_in)[member_name]
        if isinstance(raw, staticmethod | classmethod):
            raw = raw.__func__
        if (callable(raw) or isinstance(raw, property)) and not (raw.__doc__ or "").strip():
            missing.append(member_name)
    assert not missing, f"{name} members without docstrings: {missing}"


@pytest.mark.parametrize("name", SECTION_2_NAMES)
def test_every_section_2_name_is_exported(name):
    """Each name SPEC section 2 lists is in __all__ and importable from the package."""
    assert name in ephemeral_actors.__all__
    module = importlib.import_module("ephemeral_actors")
    assert getattr(module, name) is not None


@pytest.mark.parametrize(("name", "builtin"), SECTION_12_ERRORS.items())
def test_every_section_12_error_is_exported_with_its_builtin(name, builtin):
    """Each error of SPEC section 12 is exported, derives from EphemeralError and the named builtin."""
    assert name in ephemeral_actors.__all__
    error = getattr(ephemeral_actors, name)
    assert inspect.isclass(error)
    assert issubclass(error, ephemeral_actors.EphemeralError)
    if builtin is not None:
        assert issubclass(error, builtin)
    # Catchable as the builtin, and as EphemeralError.
    instance = error("signal.name") if name == "SignalCancelledError" else error("boom")
    if builtin is not None:
        with pytest.raises(builtin):
            raise instance
    with pytest.raises(ephemeral_actors.EphemeralError):
        raise instance


def test_operation_future_is_exported_as_both_kinds_of_future():
    """SPEC 15: OperationFuture is exported and is a concurrent.futures and a Pykka future."""
    assert "OperationFuture" in ephemeral_actors.__all__
    future_type = ephemeral_actors.OperationFuture
    assert issubclass(future_type, concurrent.futures.Future)
    assert issubclass(future_type, pykka.Future)


def test_ephemeral_error_is_the_exception_root():
    """EphemeralError derives directly from Exception."""
    assert ephemeral_actors.EphemeralError.__bases__ == (Exception,)


def test_signal_cancelled_is_an_operation_cancelled_and_names_its_signal():
    """SignalCancelledError counts as a cancellation and names the signal."""
    error = ephemeral_actors.SignalCancelledError("payment.failed")
    assert isinstance(error, ephemeral_actors.OperationCancelledError)
    assert error.signal == "payment.failed"
    assert "payment.failed" in str(error)


def test_unknown_coordinator_error_message_is_not_quoted():
    """UnknownCoordinatorError is a KeyError whose str() is the plain message."""
    error = ephemeral_actors.UnknownCoordinatorError("no coordinator named 'x'")
    assert str(error) == "no coordinator named 'x'"


def test_messages_all_names_every_message():
    """ephemeral_actors.messages.__all__ names every message type of SPEC section 4."""
    assert sorted(messages.__all__) == sorted(MESSAGE_NAMES)
    for name in MESSAGE_NAMES:
        cls = getattr(messages, name)
        assert inspect.isclass(cls)
        assert (inspect.getdoc(cls) or "").strip()
    assert (inspect.getdoc(messages) or "").strip()


@pytest.mark.parametrize("module", ["ephemeral_actors.messages", "ephemeral_actors.backends"])
def test_section_2_modules_import(module):
    """The public submodules SPEC section 2 names import cleanly."""
    imported = importlib.import_module(module)
    assert (inspect.getdoc(imported) or "").strip()


def test_py_typed_is_shipped():
    """The package carries the PEP 561 py.typed marker."""
    marker = importlib.resources.files("ephemeral_actors").joinpath("py.typed")
    assert marker.is_file()


def test_records_are_frozen_slotted_dataclasses():
    """OperationSnapshot, ResultSnapshot and CoordinatorStats are frozen, slotted dataclasses (SPEC 8)."""
    for name in ("OperationSnapshot", "ResultSnapshot", "CoordinatorStats"):
        cls = getattr(ephemeral_actors, name)
        assert dataclasses.is_dataclass(cls)
        params = cls.__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen, name
        assert "__slots__" in vars(cls), name
    assert issubclass(ephemeral_actors.ResultSnapshot, ephemeral_actors.OperationSnapshot)


def test_the_package_namespace_holds_only_public_names_and_its_modules():
    """`dir(ephemeral_actors)` (what completion shows) lists `__all__` and submodules,
    not the imports the package made for itself."""
    import types  # noqa: PLC0415

    extra = {
        name
        for name in dir(ephemeral_actors)
        if not name.startswith("_") and name not in ephemeral_actors.__all__
    }
    for name in extra:
        value = getattr(ephemeral_actors, name)
        assert isinstance(value, types.ModuleType), name
        assert value.__name__ == f"ephemeral_actors.{name}", name
