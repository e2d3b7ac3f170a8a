"""Leave-on-crash: the bot is a member of a room only while it lives.

    export MATRIX_HOMESERVER=... MATRIX_USER_ID=... MATRIX_ACCESS_TOKEN=...
    python examples/leave_on_crash.py '!room:example.org' [--delay 30]

The switch is a delayed ``m.room.member`` state event for the bot itself with
``{"membership": "leave"}``. If the bot dies, the server takes it out of the room one delay
later. Both Synapse generations we test (1.142.1 and 1.163.2) accept a delayed membership event
and apply it as a real leave. On a clean exit (Ctrl-C, SIGTERM) the switch is cancelled and the
bot stays, ready for its next start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from datetime import timedelta

from nio_delayed import DelayedAsyncClient, ExitPolicy


async def main(room_id: str, delay: float) -> None:
    user_id = os.environ["MATRIX_USER_ID"]
    client = DelayedAsyncClient(os.environ["MATRIX_HOMESERVER"], user_id)
    client.restore_login(user_id, "leave-on-crash", os.environ["MATRIX_ACCESS_TOKEN"])
    manager = client.keep_alive
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, manager.close_soon)  # clean exit: cancel, stay in the room
    try:
        await client.join(room_id)
        await manager.add(
            room_id,
            "m.room.member",
            {"membership": "leave"},
            state_key=client.user_id,
            delay=timedelta(seconds=delay),
            on_exit=ExitPolicy.CANCEL,
        )
        print(f"in {room_id}; out of it {delay:g} s after this process dies", flush=True)
        await manager.wait_closed()
        print("clean exit: still in the room", flush=True)
    finally:
        await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("room_id")
    parser.add_argument("--delay", type=float, default=30.0, help="seconds (default 30)")
    args = parser.parse_args()
    asyncio.run(main(args.room_id, args.delay))
