"""The "coming from" page's snippets run, and each peer's version gives the same answer."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SNIPPETS = ROOT / "docs" / "snippets" / "coming_from"
PAGE = ROOT / "docs" / "guides" / "coming-from.md"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"coming_from_{name}", SNIPPETS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["fan_out", "long_lived_queue", "per_key"])
def test_snippet_main_runs(name, capsys):
    """Each job's main() runs the thread-pool, TaskGroup and ephemeral_actors versions."""
    load(name).main()
    assert "all agree" in capsys.readouterr().out


def test_fan_out_with_aiometer():
    """The aiometer version of job 1 returns the same results, in order."""
    pytest.importorskip("aiometer")
    fan_out = load("fan_out")
    items = list(range(30))
    assert asyncio.run(fan_out.with_aiometer(items)) == fan_out.with_ephemeral_actors(items)


def test_long_lived_queue_with_aiometer():
    """The aiometer version of job 2 counts the same sends and failures."""
    pytest.importorskip("aiometer")
    queue = load("long_lived_queue")
    messages = [f"hello {n}" if n % 10 else f"bounce {n}" for n in range(40)]
    assert asyncio.run(queue.with_aiometer(messages)) == queue.with_ephemeral_actors(messages)


def test_per_key_with_aiometer():
    """The aiometer version of job 3 keeps each account's events in order."""
    pytest.importorskip("aiometer")
    per_key = load("per_key")
    events = [per_key.Event(f"account-{n % 5}", n) for n in range(60)]
    ledger = per_key.Ledger()
    asyncio.run(per_key.with_aiometer(events, ledger))
    per_key.check(ledger, events)


def test_the_page_shows_every_snippet_section():
    """Every section of every snippet file is included by the page, and nothing else is."""
    included = set(
        re.findall(r'--8<-- "docs/snippets/coming_from/(\w+)\.py:(\w+)"', PAGE.read_text())
    )
    defined = {
        (path.stem, section)
        for path in SNIPPETS.glob("*.py")
        for section in re.findall(r"# --8<-- \[start:(\w+)\]", path.read_text())
    }
    assert included == defined
