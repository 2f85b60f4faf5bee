"""`python -m ephemeral_actors demo`: a short, realistic workload with a live view."""

from __future__ import annotations

import argparse
import sys

from ephemeral_actors._demo import run_demo


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m ephemeral_actors")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a short workload and show it live")
    demo.add_argument("--items", type=int, default=400, help="items to process (default 400)")
    demo.add_argument("--plain", action="store_true", help="one line per update, no redraw")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo(items=args.items, plain=args.plain or not sys.stdout.isatty())
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
