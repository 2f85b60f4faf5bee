"""The command line: `python -m ephemeral_actors <command>`.

Commands:

* `demo` — a keyed workload with failures and a signal that defers work, shown
  live (`ephemeral_actors.console.live_view`), then summarised.

Each command is a subparser with a `run` default, so adding one is one function
and one `add_parser` call.
"""

from __future__ import annotations

import argparse
import sys

from ephemeral_actors._demo import run_demo

__all__ = ["main"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _demo(args: argparse.Namespace) -> int:
    # Without a terminal (piped, redirected, CI) a redrawn table is noise: print lines.
    plain = bool(args.plain) or not sys.stdout.isatty()
    return run_demo(items=args.items, plain=plain, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m ephemeral_actors`."""
    parser = argparse.ArgumentParser(
        prog="python -m ephemeral_actors",
        description="ephemeral_actors: bounded, observable background work on Pykka actors.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run a short shop workload (keyed orders, emails, a rate limit) and show it live",
        description=(
            "Orders (keyed per customer) and emails share a signal bus; a few fail and the "
            "payment API rate-limits once, which defers orders until a watchdog clears it."
        ),
    )
    demo.add_argument(
        "--items", type=_positive, default=400, help="events to process (default 400, ~12 s)"
    )
    demo.add_argument(
        "--plain",
        action="store_true",
        help="print plain lines instead of a live table (automatic without a terminal)",
    )
    demo.add_argument("--seed", type=int, default=7, help="seed of the simulated workload")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        # The command has already closed what it started (its `with` blocks ran).
        sys.stderr.write("interrupted\n")
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
