"""``nio-delayed devserver``: a local Synapse with delayed events, for developing a bot."""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import signal
import sys
from typing import Any

from nio.responses import JoinResponse, RoomCreateResponse

from .. import DelayedAsyncClient
from ..devserver import DevServer, DevServerError, DevUser
from .common import EXIT_ERROR, EXIT_OK

__all__ = ["QUICK_START_VARIABLES", "add_devserver_command", "start_devserver"]

# What the guide's quick start reads; the operator commands read the first, second and fourth.
QUICK_START_VARIABLES = (
    "MATRIX_HOMESERVER",
    "MATRIX_USER_ID",
    "MATRIX_DEVICE_ID",
    "MATRIX_ACCESS_TOKEN",
    "MATRIX_ROOM_ID",
)


def add_devserver_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "devserver",
        help="run a throwaway local Synapse with delayed events until Ctrl-C",
        description="Start Synapse on 127.0.0.1 (temporary directory, SQLite), register "
        "accounts, put them in one room, print their credentials and the export lines of the "
        "quick start, and stop it all on Ctrl-C.",
    )
    parser.add_argument(
        "--users",
        default="bot,alice",
        help="accounts to register, the bot first (default: bot,alice)",
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


def _client(server: DevServer, user: DevUser) -> DelayedAsyncClient:
    client = DelayedAsyncClient(server.url, user.user_id)
    client.restore_login(user.user_id, user.device_id, user.access_token)
    return client


async def shared_room(server: DevServer, users: list[DevUser]) -> str:
    """A room that the first user creates and every other user joins; returns its id."""
    owner, *others = users
    clients = [_client(server, user) for user in users]
    try:
        created = await clients[0].room_create(
            name="nio-delayed devserver", invite=[u.user_id for u in others]
        )
        if not isinstance(created, RoomCreateResponse):
            raise DevServerError(f"{owner.user_id} could not create a room: {created}")
        for client in clients[1:]:
            joined = await client.join(created.room_id)
            if not isinstance(joined, JoinResponse):
                raise DevServerError(f"{client.user_id} could not join the room: {joined}")
        return created.room_id
    finally:
        for client in clients:
            await client.close()


def quick_start_env(server: DevServer, bot: DevUser, room_id: str) -> dict[str, str]:
    """The environment the quick start reads, for ``bot`` in ``room_id``."""
    values = (server.url, bot.user_id, bot.device_id, bot.access_token, room_id)
    return dict(zip(QUICK_START_VARIABLES, values, strict=True))


def details(server: DevServer, users: list[DevUser], room_id: str | None) -> dict[str, Any]:
    """Everything ``--json`` prints: the server, the accounts, their room and the environment."""
    return {
        "url": server.url,
        "pid": server.pid,
        "version": server.version,
        "room_id": room_id,
        "users": [
            {
                "user_id": u.user_id,
                "device_id": u.device_id,
                "access_token": u.access_token,
                "password": u.password,
            }
            for u in users
        ],
        "env": quick_start_env(server, users[0], room_id) if users and room_id else {},
    }


def print_details(found: dict[str, Any], feature_off: bool) -> None:
    feature = "off" if feature_off else "on"
    print(f"Synapse {found['version']} at {found['url']} (pid {found['pid']}), ", end="")
    print(f"delayed events {feature}")
    for user in found["users"]:
        print(
            f"  {user['user_id']:<24} password {user['password']}  device {user['device_id']}  "
            f"token {user['access_token']}"
        )
    if found["room_id"]:
        print(f"  room {found['room_id']}, every user above joined")
    if found["env"]:
        print("For the quick start and the operator commands:")
        for name, value in found["env"].items():
            print(f"  export {name}={shlex.quote(value)}")
    print("Press Ctrl-C to stop.", flush=True)


async def devserver(args: argparse.Namespace) -> int:
    try:
        server = await asyncio.to_thread(
            start_devserver,
            args.synapse_python,
            delayed_events=not args.feature_off,
            default_rate_limits=args.default_rate_limits,
        )
    except DevServerError as exc:
        print(f"nio-delayed: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        users = [
            server.register_user(name.strip()) for name in args.users.split(",") if name.strip()
        ]
        room_id = await shared_room(server, users) if users else None
        # Ctrl-C is handled before anything is printed: whoever reads "Press Ctrl-C" (a person,
        # a script) may press it at once.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        found = details(server, users, room_id)
        if args.json:
            print(json.dumps(found), flush=True)
        else:
            print_details(found, args.feature_off)
        await stop.wait()
    finally:
        await asyncio.to_thread(server.close)
    if not args.json:
        print("Synapse stopped and its files deleted")
    return EXIT_OK
