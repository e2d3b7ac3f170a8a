"""The ``nio-delayed`` command: a demo, a local Synapse, operator commands, and ``run``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from .. import __version__
from .common import CommandError, connect
from .demo import add_demo_command
from .devserver_command import add_devserver_command
from .operator import add_operator_commands
from .run import add_run_command
from .status import add_status_command

__all__ = ["build_parser", "main"]

# What a shell reports for a program killed by SIGPIPE.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nio-delayed",
        description="Matrix delayed events (MSC4140) and dead-man's switches.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_demo_command(commands)
    add_devserver_command(commands)
    add_operator_commands(commands)
    add_run_command(commands)
    add_status_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(name)s: %(levelname)s: %(message)s")
    try:
        code = asyncio.run(_dispatch(args))
        # Flush here, not at interpreter exit, so that a closed pipe is caught below.
        sys.stdout.flush()
        return code
    except CommandError as exc:
        print(f"nio-delayed: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`nio-delayed list | head -1`): stop quietly, as a program killed
        # by SIGPIPE would, and keep the interpreter's last flush from complaining.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


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
