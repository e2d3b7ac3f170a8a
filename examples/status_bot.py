"""Status bot: "online" while it lives, "offline" the moment it dies, even if it dies hard.

    export MATRIX_HOMESERVER=https://matrix.example.org MATRIX_USER_ID=@bot:example.org
    export MATRIX_ACCESS_TOKEN=...
    python examples/status_bot.py '!room:example.org' [--delay 30]

The bot publishes the state event ``org.example.bot.status`` (state key: its own user ID) as
``{"status": "online"}``. Its dead-man's switch is the same state with ``{"status": "offline"}``:
restarted while the bot lives, sent by the server ``--delay`` seconds after the bot stops
restarting it (crash, SIGKILL, lost network, lost machine). On Ctrl-C or SIGTERM the bot sends
it at once. Try it against `nio-delayed devserver`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from datetime import timedelta

from nio_delayed import AliveEvent, DelayedAsyncClient, ExitPolicy

STATUS = "org.example.bot.status"


async def main(room_id: str, delay: float) -> None:
    user_id = os.environ["MATRIX_USER_ID"]
    client = DelayedAsyncClient(os.environ["MATRIX_HOMESERVER"], user_id)
    client.restore_login(user_id, "status-bot", os.environ["MATRIX_ACCESS_TOKEN"])
    manager = client.keep_alive
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, manager.close_soon)  # stop: send "offline" now
    try:
        await manager.add(
            room_id,
            STATUS,
            {"status": "offline"},
            state_key=client.user_id,
            delay=timedelta(seconds=delay),
            alive=AliveEvent(STATUS, {"status": "online"}, state_key=client.user_id),
            on_exit=ExitPolicy.SEND,
        )
        print(f"online in {room_id}; offline {delay:g} s after this process dies", flush=True)
        await manager.wait_closed()
        print("offline (clean exit)", flush=True)
    finally:
        await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("room_id")
    parser.add_argument("--delay", type=float, default=30.0, help="seconds (default 30)")
    args = parser.parse_args()
    asyncio.run(main(args.room_id, args.delay))
