"""Many rooms: one keep-alive manager keeps a dead-man's switch in each of many rooms.

    export MATRIX_HOMESERVER=... MATRIX_USER_ID=... MATRIX_ACCESS_TOKEN=...
    python examples/many_rooms.py [ROOM_ID ...] [--delay 60]

Without room IDs it uses every room the bot has joined. Each room gets a "bot offline" notice
that the server sends if the bot dies; one scheduler restarts them all, spreading the restarts
out and backing off together when the server rate-limits. A status line is printed every few
seconds. Ctrl-C or SIGTERM cancels every switch (a clean exit says nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections import Counter
from datetime import timedelta

from nio import JoinedRoomsResponse

from nio_delayed import DelayedAsyncClient, ExitPolicy, KeepAliveManager

OFFLINE = {"msgtype": "m.notice", "body": "bot offline"}


async def report(manager: KeepAliveManager) -> None:
    while True:
        states = Counter(switch.state.value for switch in manager.switches)
        stats = manager.stats()
        margin = "-" if stats.min_margin is None else f"{stats.min_margin:.1f} s"
        print(
            f"{len(manager.switches)} switches {dict(states)}; {stats.restarts_ok} restarts, "
            f"{stats.restarts_failed} failed, smallest margin {margin}",
            flush=True,
        )
        await asyncio.sleep(5)


async def main(room_ids: list[str], delay: float) -> None:
    user_id = os.environ["MATRIX_USER_ID"]
    client = DelayedAsyncClient(os.environ["MATRIX_HOMESERVER"], user_id)
    client.restore_login(user_id, "many-rooms", os.environ["MATRIX_ACCESS_TOKEN"])
    manager = client.keep_alive
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, manager.close_soon)
    try:
        if not room_ids:
            joined = await client.joined_rooms()
            if not isinstance(joined, JoinedRoomsResponse):
                raise SystemExit(f"cannot list the joined rooms: {joined}")
            room_ids = joined.rooms
        for room_id in room_ids:
            await manager.add(
                room_id,
                "m.room.message",
                OFFLINE,
                delay=timedelta(seconds=delay),
                on_exit=ExitPolicy.CANCEL,
            )
        print(f"armed {len(room_ids)} switches", flush=True)
        reporter = asyncio.create_task(report(manager))
        await manager.wait_closed()
        reporter.cancel()
    finally:
        await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("room_ids", nargs="*")
    parser.add_argument("--delay", type=float, default=60.0, help="seconds (default 60)")
    args = parser.parse_args()
    asyncio.run(main(args.room_ids, args.delay))
