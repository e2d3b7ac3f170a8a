"""``nio-delayed devserver``: a local Synapse with delayed events, for developing a bot."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

from ..devserver import DevServer, DevServerError
from .common import EXIT_ERROR, EXIT_OK

__all__ = ["add_devserver_command", "start_devserver"]


def add_devserver_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "devserver",
        help="run a throwaway local Synapse with delayed events until Ctrl-C",
        description="Start Synapse on 127.0.0.1 (temporary directory, SQLite), register "
        "accounts, print their credentials, and stop it all on Ctrl-C.",
    )
    parser.add_argument(
        "--users", default="bot,alice", help="accounts to register (default: bot,alice)"
    )
    parser.add_argument("--synapse-python", help="the Python of a virtualenv that has Synapse")
    parser.add_argument("--feature-off", action="store_true", help="delayed events turned off")
    parser.add_argument(
        "--default-rate-limits", action="store_true", help="keep Synapse's rate limits"
    )
    parser.add_argument("--json", action="store_true", help="print the details as one JSON line")
    parser.set_defaults(run=devserver, needs_client=False)


def start_devserver(python: str | None, **options: bool) -> DevServer:
    """Start a DevServer, or explain what is missing."""
    try:
        return DevServer(python=python, **options).start()  # type: ignore[arg-type]
    except DevServerError as exc:
        if "No module named" in str(exc) and "synapse" in str(exc):
            raise DevServerError(
                "Synapse is not installed for this Python: install nio-delayed's server extra "
                "(pip install '.[server]' in its checkout), or pass --synapse-python with the "
                "Python of a virtualenv that has Synapse"
            ) from exc
        raise


async def devserver(args: argparse.Namespace) -> int:
    try:
        server = await asyncio.to_thread(
            start_devserver,
            args.synapse_python,
            delayed_events=not args.feature_off,
            default_rate_limits=args.default_rate_limits,
        )
    except DevServerError as exc:
        print(f"nio-delayed: {exc}")
        return EXIT_ERROR
    try:
        users = [
            server.register_user(name.strip()) for name in args.users.split(",") if name.strip()
        ]
        if args.json:
            details = {
                "url": server.url,
                "pid": server.pid,
                "version": server.version,
                "users": [
                    {"user_id": u.user_id, "access_token": u.access_token, "password": u.password}
                    for u in users
                ],
            }
            print(json.dumps(details), flush=True)
        else:
            feature = "off" if args.feature_off else "on"
            print(
                f"Synapse {server.version} at {server.url} (pid {server.pid}), "
                f"delayed events {feature}"
            )
            for user in users:
                print(f"  {user.user_id:<24} password {user.password}  token {user.access_token}")
            if users:
                print("For the operator commands:")
                print(f"  export MATRIX_HOMESERVER={server.url}")
                print(f"  export MATRIX_USER_ID={users[0].user_id}")
                print(f"  export MATRIX_ACCESS_TOKEN={users[0].access_token}")
            print("Press Ctrl-C to stop.", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await asyncio.to_thread(server.close)
    if not args.json:
        print("Synapse stopped and its files deleted")
    return EXIT_OK
