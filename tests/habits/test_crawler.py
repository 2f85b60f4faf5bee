"""examples/crawler.py, in-process: every failure listed by its label, the rate limit seen."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "examples" / "crawler.py"


def test_crawler_lists_every_failure_with_its_url(capsys: pytest.CaptureFixture[str]):
    """The fake site's five failing pages are all named; the 429 emitted `rate-limit`."""
    spec = importlib.util.spec_from_file_location("crawler_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    asyncio.run(module.main())
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "crawled 60 pages: 55 ok, 5 failed"
    assert sorted(lines[1:6]) == sorted(
        [
            "  failed: https://a.example/7 (HTTP 404)",
            "  failed: https://b.example/7 (HTTP 404)",
            "  failed: https://c.example/7 (HTTP 404)",
            "  failed: https://c.example/4 (HTTP 429)",
            "  failed: https://b.example/13 (HTTP 500)",
        ]
    )
    assert lines[6] == "rate limit seen: True"
