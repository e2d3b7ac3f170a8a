"""``nio-delayed demo``: the whole point in one command.

A throwaway Synapse starts on 127.0.0.1. A bot process keeps a dead-man's switch alive while we
watch. Then the bot is killed with SIGKILL, and a second account receives the bot's last words,
sent by the server, with the time from death to message measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from datetime import timedelta
from typing import Any

from nio.api import MessageDirection
from nio.responses import RoomCreateResponse, RoomMessagesResponse

from .. import DelayedAsyncClient
from ..devserver import DevServer, DevServerError, DevUser
from .common import DURATION_HELP, EXIT_ERROR, EXIT_OK, parse_duration, parse_switch_delay
from .devserver_command import start_devserver

__all__ = ["add_demo_command"]

LAST_WORDS = {"msgtype": "m.notice", "body": "demo-bot went offline (its dead-man's switch fired)"}


def add_demo_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo", help="see a dead-man's switch fire, on a throwaway Synapse", description=__doc__
    )
    parser.add_argument(
        "--delay",
        type=parse_switch_delay,
        default=timedelta(seconds=2),
        help=f"the switch's delay, at least 1s ({DURATION_HELP}; default 2s)",
    )
    parser.add_argument(
        "--alive",
        type=parse_duration,
        default=timedelta(seconds=5),
        help=f"how long the bot lives ({DURATION_HELP}; default 5s)",
    )
    parser.add_argument(
        "--keep-server", action="store_true", help="leave Synapse running afterwards"
    )
    parser.add_argument("--synapse-python", help="the Python of a virtualenv that has Synapse")
    parser.set_defaults(run=demo, needs_client=False)


def _client(server: DevServer, user: DevUser) -> DelayedAsyncClient:
    client = DelayedAsyncClient(server.url, user.user_id)
    client.restore_login(user.user_id, user.device_id, user.access_token)
    return client


async def demo(args: argparse.Namespace) -> int:
    delay: timedelta = args.delay
    print("1. Starting a throwaway Synapse on 127.0.0.1 with delayed events ...")
    started = time.monotonic()
    try:
        server = await asyncio.to_thread(start_devserver, args.synapse_python)
    except DevServerError as exc:
        print(f"nio-delayed: {exc}")
        return EXIT_ERROR
    print(
        f"   Synapse {server.version} at {server.url} (pid {server.pid}), "
        f"ready in {time.monotonic() - started:.1f} s"
    )
    try:
        return await _story(server, delay, args.alive.total_seconds())
    finally:
        if args.keep_server:
            print(
                f"Synapse keeps running at {server.url} (pid {server.pid}); "
                f"stop it with: kill {server.pid}"
            )
        else:
            await asyncio.to_thread(server.close)
            print("Synapse stopped and its files deleted.")


async def _story(server: DevServer, delay: timedelta, alive_for: float) -> int:
    bot_user, watcher_user = server.register_user("demo-bot"), server.register_user("watcher")
    bot, watcher = _client(server, bot_user), _client(server, watcher_user)
    try:
        created = await bot.room_create(name="nio-delayed demo", invite=[watcher_user.user_id])
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        await watcher.join(room_id)
        print(f"2. {bot_user.user_id} and {watcher_user.user_id} are in {room_id}")

        print(f"3. The bot starts, with a switch of {delay.total_seconds():g} s: "
              f'"{LAST_WORDS["body"]}"')  # fmt: skip
        process = await _start_bot(server, bot_user, room_id, delay)
        try:
            due = await _watch_bot(process, alive_for)
            print("4. Killing the bot with SIGKILL: no goodbye, no cleanup")
            killed = time.monotonic()
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        finally:
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        print("5. The watcher waits for the bot's last words ...")
        sender = await _wait_for_last_words(watcher, room_id, timeout=delay.total_seconds() + 10)
        received = time.monotonic()
        print(f'   received "{LAST_WORDS["body"]}" from {sender}')
        print(f"   {received - killed:.3f} s after SIGKILL (delay {delay.total_seconds():g} s: the "
              "server sends it one delay after the bot's last restart),")  # fmt: skip
        print(f"   {(received - due) * 1000:+.0f} ms from the deadline the bot predicted")
        return EXIT_OK
    finally:
        await bot.close()
        await watcher.close()


async def _start_bot(
    server: DevServer, user: DevUser, room_id: str, delay: timedelta
) -> asyncio.subprocess.Process:
    """The bot: ``nio-delayed run`` keeping a switch alive around a long-running job."""
    env = {
        **os.environ,
        "MATRIX_HOMESERVER": server.url,
        "MATRIX_USER_ID": user.user_id,
        "MATRIX_ACCESS_TOKEN": user.access_token,
    }
    job = [sys.executable, "-c", "import time; time.sleep(3600)"]
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nio_delayed", "run",
        "--room", room_id, "--type", "m.room.message", "--content", json.dumps(LAST_WORDS),
        "--delay", f"{int(delay.total_seconds() * 1000)}ms", "--events", "json", "--", *job,
        env=env,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group: SIGKILL takes the job with it
    )  # fmt: skip


async def _watch_bot(process: asyncio.subprocess.Process, alive_for: float) -> float:
    """Show the bot's live status for ``alive_for`` seconds after it is armed. Returns the
    moment (monotonic clock) the server is due to send the event, from the last status."""
    assert process.stderr is not None
    armed_at: float | None = None
    due = last_shown = 0.0
    live = sys.stdout.isatty()
    while armed_at is None or time.monotonic() - armed_at < alive_for:
        try:
            line = await asyncio.wait_for(process.stderr.readline(), timeout=30)
        except asyncio.TimeoutError:
            raise RuntimeError("the bot said nothing for 30 s") from None
        if not line:
            raise RuntimeError(f"the bot exited early with status {await process.wait()}")
        try:
            status: dict[str, Any] = json.loads(line)
        except ValueError:
            print(f"   bot: {line.decode(errors='replace').rstrip()}")
            continue
        if status["kind"] == "armed":
            armed_at = time.monotonic()
            print("   switch armed; the bot restarts it while it lives:")
        if armed_at is None or status.get("deadline_in") is None:
            continue
        due = time.monotonic() + status["deadline_in"]
        margin = status["min_margin"]
        text = (
            f"   alive: {status['restarts_ok']:>3} restarts, server deadline in "
            f"{status['deadline_in']:5.2f} s, smallest margin "
            f"{'-' if margin is None else f'{margin:.2f} s'}"
        )
        if live:
            print(f"\r{text}   ", end="", flush=True)
        elif time.monotonic() - last_shown >= 1.0:  # not a terminal: a line a second
            last_shown = time.monotonic()
            print(text, flush=True)
    if live:
        print()
    return due


async def _wait_for_last_words(watcher: DelayedAsyncClient, room_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = await watcher.room_messages(room_id, direction=MessageDirection.back, limit=20)
        if isinstance(resp, RoomMessagesResponse):
            for event in resp.chunk:
                if event.source.get("content", {}).get("body") == LAST_WORDS["body"]:
                    return str(event.source["sender"])
        await asyncio.sleep(0.01)
    raise RuntimeError(f"the watcher received nothing within {timeout:g} s")
