"""The documentation builds cleanly, and CI would notice if it did not."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ci_counts_docs_warnings():
    """.ci/run builds the docs with --strict and without -q, which would hide the warnings."""
    lines = [
        line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "mkdocs build" in line
    ]
    assert lines, "CI no longer builds the docs"
    for line in lines:
        words = shlex.split(line)
        assert "--strict" in words
        assert "-q" not in words
        assert "--quiet" not in words


def test_docs_build_strict_without_warnings():
    """`mkdocs build --strict` succeeds and prints no WARNING (e.g. a class on two pages)."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    with tempfile.TemporaryDirectory() as site:
        result = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", site],
            cwd=ROOT,
            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output


def install_lines() -> list[tuple[str, str]]:
    """Every line of the docs, README and examples that tells the reader to pip install."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    files += sorted((ROOT / "examples").glob("*.py"))
    return [
        (str(path.relative_to(ROOT)), line)
        for path in files
        for line in path.read_text().splitlines()
        if "pip install" in line
    ]


def test_install_lines_work_from_a_checkout():
    """Each pip install line installs the checkout (`.`), or says it is the published name.

    The project is on no package index yet, so `pip install 'ephemeral_actors[x]'` alone
    would send a reader to an index that does not have it.
    """
    checkout = re.compile(r"""pip install (-e )?["']?\.(\[[\w,]+\])?["']?(\s|$|`)""")
    lines = install_lines()
    assert lines
    for where, line in lines:
        for command in re.findall(r"pip install [^`)]+", line):
            assert checkout.search(command + " ") or "published" in line, (where, line)
