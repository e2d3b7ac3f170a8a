"""A plain nio bot with a sync loop and a dead-man's switch, stopped cleanly by a signal.

    export MATRIX_HOMESERVER=... MATRIX_USER_ID=... MATRIX_ACCESS_TOKEN=...
    python examples/sync_bot.py '!room:example.org' [--delay 30]

The recipe for any ``sync_forever`` bot:

1. The first sync (``full_state=True``) before anything else: the client then knows its rooms,
   their members and whether they are encrypted, and old messages are not answered.
2. The switch is armed after it, and lives in an ``async with`` around ``sync_forever``:
   while the loop runs, the keep-alive restarts the switch from the same event loop.
3. ``stop_on_signals()`` turns SIGINT and SIGTERM into a clean stop: ``sync_forever`` is
   cancelled, the switch block sends "offline" now (its exit policy), and the client closes.
   SIGKILL or a crash skips all that: the server sends "offline" one delay later.

While it runs, the bot answers ``!ping`` with ``pong`` in the room.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import timedelta

from nio import MatrixRoom, RoomMessageText, SyncResponse

from nio_delayed import AliveEvent, DelayedAsyncClient, ExitPolicy, stop_on_signals

STATUS = "org.example.bot.status"


async def main(room_id: str, delay: float) -> int:
    user_id = os.environ["MATRIX_USER_ID"]
    client = DelayedAsyncClient(os.environ["MATRIX_HOMESERVER"], user_id)
    client.restore_login(user_id, "sync-bot", os.environ["MATRIX_ACCESS_TOKEN"])

    async def on_message(room: MatrixRoom, event: RoomMessageText) -> None:
        if event.sender != client.user_id and event.body.strip() == "!ping":
            pong = {"msgtype": "m.notice", "body": "pong"}
            await client.room_send(room.room_id, "m.room.message", pong)

    try:
        async with stop_on_signals() as shutdown:
            first = await client.sync(timeout=0, full_state=True)
            if not isinstance(first, SyncResponse):
                print(f"first sync failed: {first}", file=sys.stderr)
                return 1
            client.add_event_callback(on_message, RoomMessageText)  # new messages only
            async with client.dead_mans_switch(
                room_id,
                STATUS,
                {"status": "offline"},
                state_key=client.user_id,
                delay=timedelta(seconds=delay),
                alive=AliveEvent(STATUS, {"status": "online"}, state_key=client.user_id),
                on_exit=ExitPolicy.SEND,
            ):
                print(f"ready: syncing; offline {delay:g} s after this process dies", flush=True)
                await client.sync_forever(timeout=30_000)
        how = shutdown.signal.name if shutdown.signal else "itself"
        print(f"stopped by {how}; offline sent", flush=True)
        return 0
    finally:
        await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("room_id")
    parser.add_argument("--delay", type=float, default=30.0, help="seconds (default 30)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.room_id, args.delay)))
