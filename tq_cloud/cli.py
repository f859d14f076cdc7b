"""The `tq-cloud` command."""

from __future__ import annotations

import argparse
import logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tq-cloud", description="tq-cloud task queue tools")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run the in-memory demo (no AWS needed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from tq_cloud.demo import main as demo

        demo()
    return 0
