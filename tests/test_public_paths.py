"""Public names report the module users import them from (SPEC 15, "Public error paths")."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import inspect
import pickle
import sys
import traceback

import pytest

import ephemeral_actors
from ephemeral_actors import (
    Admission,
    CoordinatorClosedError,
    CoordinatorOptions,
    ResultCoordinator,
    SignalBlockReason,
    SignalCancelledError,
    SignalEvent,
    SignalPropagation,
    WorkCoordinator,
    messages,
)
from ephemeral_actors._public import is_private_module

PUBLIC_MODULES = (
    "ephemeral_actors",
    "ephemeral_actors.actors",
    "ephemeral_actors.backends",
    "ephemeral_actors.console",
    "ephemeral_actors.messages",
    "ephemeral_actors.metrics",
    "ephemeral_actors.metrics.prometheus",
    "ephemeral_actors.testing",
)


def exported(module_name: str) -> list[tuple[str, object]]:
    if module_name == "ephemeral_actors.metrics.prometheus":
        pytest.importorskip("prometheus_client")
    module = importlib.import_module(module_name)
    return [
        (name, getattr(module, name))
        for name in module.__all__
        if inspect.isclass(getattr(module, name)) or inspect.isfunction(getattr(module, name))
    ]


def resolve(obj: object) -> object:
    """What pickle (and a reader of a traceback) finds at `obj.__module__`.`__qualname__`."""
    target: object = importlib.import_module(obj.__module__)  # type: ignore[attr-defined]
    for part in obj.__qualname__.split("."):  # type: ignore[attr-defined]
        target = getattr(target, part)
    return target


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_exported_class_and_function_names_a_public_module(module_name):
    """`__module__` of every exported class/function is public and resolves back to it."""
    for name, obj in exported(module_name):
        assert not is_private_module(obj.__module__), f"{module_name}.{name}: {obj.__module__}"
        assert resolve(obj) is obj, name


@pytest.mark.parametrize("name", ephemeral_actors.__all__)
def test_top_level_names_report_ephemeral_actors(name):
    """Every class and function exported by the package reports `ephemeral_actors`."""
    obj = getattr(ephemeral_actors, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert obj.__module__ == "ephemeral_actors"


def test_ray_backend_reports_the_backends_module():
    """The lazily imported RayBackend reports `ephemeral_actors.backends`, where users import it."""
    pytest.importorskip("ray")
    RayBackend = importlib.import_module("ephemeral_actors.backends").RayBackend

    assert RayBackend.__module__ == "ephemeral_actors.backends"
    assert resolve(RayBackend) is RayBackend


def test_traceback_shows_the_public_path():
    """A traceback of enqueue on a closed coordinator names ephemeral_actors.CoordinatorClosedError."""
    coordinator = WorkCoordinator(lambda _item: None)
    coordinator.close()
    with pytest.raises(CoordinatorClosedError) as raised:
        coordinator.enqueue(1)
    text = "".join(traceback.format_exception(raised.value))
    assert "\nephemeral_actors.CoordinatorClosedError: " in text
    assert "_errors" not in text.splitlines()[-1]
    assert str(raised.type) == "<class 'ephemeral_actors.CoordinatorClosedError'>"


def round_trip(value: object) -> object:
    data = pickle.dumps(value)
    assert b"ephemeral_actors._" not in data, "a pickle names a private module"
    return pickle.loads(data)


@pytest.mark.parametrize(
    "name",
    [n for n in ephemeral_actors.__all__ if n.endswith("Error")],
)
def test_exceptions_pickle_through_the_public_path(name):
    """Every exported exception pickles and unpickles with its message (and signal)."""
    error_type = getattr(ephemeral_actors, name)
    error = error_type("rate-limit") if error_type is SignalCancelledError else error_type("boom")
    copy = round_trip(error)
    assert type(copy) is error_type
    assert str(copy) == str(error)
    if isinstance(error, SignalCancelledError):
        assert copy.signal == "rate-limit"  # type: ignore[attr-defined]


def failing(item: int) -> int:
    if item == 2:
        raise ValueError("two")
    return item * 10


def test_records_options_and_signals_pickle_through_the_public_path():
    """Snapshots, stats, options, signal records, enums and messages survive pickling."""
    with ResultCoordinator(failing, CoordinatorOptions(max_concurrency=1)) as results:
        results.enqueue_many([1, 2])
    snapshots = results.get_snapshot()
    assert len(snapshots) == 2
    for snapshot in (*snapshots, *results.get_base_snapshot()):
        copy = round_trip(snapshot)
        assert type(copy) is type(snapshot)
        assert copy.id == snapshot.id
        assert type(copy.error) is type(snapshot.error)
    assert round_trip(results.stats()) == results.stats()
    options = CoordinatorOptions(max_concurrency=3, cancel_on_signals="stop.*")
    assert round_trip(options) == options
    propagation = SignalPropagation.root("a").extend("b")
    event = SignalEvent("b", 7, None, _dt.datetime.now(_dt.UTC), propagation)
    assert round_trip(event) == event
    assert round_trip(propagation) == propagation
    assert round_trip(Admission.FULL) is Admission.FULL
    assert round_trip(SignalBlockReason.CYCLE_DETECTED) is SignalBlockReason.CYCLE_DETECTED
    assert round_trip(messages.Pin(5)) == messages.Pin(5)


def test_published_dataclasses_still_have_their_fields():
    """Re-homing a dataclass does not disturb its fields (they were resolved at definition)."""
    assert "max_concurrency" in {f.name for f in dataclasses.fields(CoordinatorOptions)}
    assert sys.modules[CoordinatorOptions.__module__] is ephemeral_actors
