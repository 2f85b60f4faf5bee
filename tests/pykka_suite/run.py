"""Run Pykka's own test suite, for the installed Pykka version, against `PoolActor`.

`PoolActor` is a Pykka runtime of our own, so Pykka's tests are its specification.
This script gets them at run time from the Pykka sdist on PyPI (the sdist ships
`tests/`; nothing of Pykka's is kept in this repository), unpacks it in a temporary
directory and runs its `tests/` with the `pool_runtime` plugin, which adds a "pool"
runtime next to Pykka's "threading" one. The only expected difference is marked
`xfail(strict=True)` there.

Usage: `python tests/pykka_suite/run.py [pytest arguments...]`. The exit status is
pytest's (0 when the suite passes); downloading or unpacking failures exit non-zero.
Set `PYKKA_SDIST` to a local `pykka-<version>.tar.gz` to skip the download.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def fetch_sdist(version: str, into: Path) -> Path:
    """Download the sdist of `pykka==version` into `into`; return its path."""
    local = os.environ.get("PYKKA_SDIST")
    if local:
        return Path(local)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-binary",
            ":all:",
            "--no-deps",
            "--dest",
            str(into),
            f"pykka=={version}",
        ],
        check=True,
    )
    (sdist,) = into.glob("pykka-*.tar.gz")
    return sdist


def unpack(sdist: Path, into: Path) -> Path:
    """Unpack `sdist` into `into`; return the directory holding its `tests/`."""
    with tarfile.open(sdist) as archive:
        archive.extractall(into, filter="data")
    (source,) = (path.parent.parent for path in into.glob("*/tests/conftest.py"))
    return source


def main(argv: list[str]) -> int:
    """Fetch, unpack and run the suite; return pytest's exit status."""
    version = importlib.metadata.version("pykka")
    with tempfile.TemporaryDirectory(prefix="pykka-suite-") as tmp:
        source = unpack(fetch_sdist(version, Path(tmp)), Path(tmp) / "src")
        print(f"Pykka {version}: running {source / 'tests'} against PoolActor", flush=True)
        # Pykka's tests import their helpers as `tests.*` from the sdist root, which
        # must come before this repository's own `tests` package: the sdist root is
        # the working directory (first on sys.path with `-m`); this checkout and the
        # plugin's folder come after it, so `ephemeral_actors` is this checkout's.
        path = os.pathsep.join(
            [str(HERE), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        env = {**os.environ, "PYTHONPATH": path}
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "pool_runtime",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(source),
            # A hang in a pool actor must fail the run, not stall CI.
            "--timeout",
            "120",
            "-q",
            "tests",
            *argv,
        ]
        return subprocess.run(command, cwd=source, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
