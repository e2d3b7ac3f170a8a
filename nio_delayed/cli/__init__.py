"""The ``nio-delayed`` command: a demo, a local Synapse, operator commands, and ``run``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from importlib.metadata import PackageNotFoundError, version

from .common import CommandError, connect
from .demo import add_demo_command
from .devserver_command import add_devserver_command
from .operator import add_operator_commands
from .run import add_run_command

__all__ = ["build_parser", "main"]


def _version() -> str:
    try:
        return version("nio-delayed")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nio-delayed",
        description="Matrix delayed events (MSC4140) and dead-man's switches.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_demo_command(commands)
    add_devserver_command(commands)
    add_operator_commands(commands)
    add_run_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(name)s: %(levelname)s: %(message)s")
    try:
        return asyncio.run(_dispatch(args))
    except CommandError as exc:
        print(f"nio-delayed: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


async def _dispatch(args: argparse.Namespace) -> int:
    if not args.needs_client:
        code: int = await args.run(args)
        return code
    client = connect(args)
    try:
        code = await args.run(client, args)
        return code
    finally:
        await client.close()
