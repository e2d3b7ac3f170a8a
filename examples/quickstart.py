"""Quick start: a "bot went offline" message that the server sends only if the bot stops
restarting its timer.

    make demo                      # starts a throwaway Synapse on 127.0.0.1 and runs this

The bot schedules the message with a 2 s delay and restarts the timer every second: while it
does, nothing is sent. Then it stops (as a crashed bot would) and the watcher sees the message
about 2 s later, sent by the server on the bot's behalf.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from nio import MessageDirection, RoomMessagesResponse

from nio_delayed import DelayedAsyncClient, RoomSendDelayedResponse, UpdateDelayedEventResponse
from nio_delayed.devserver import DevServer

LAST_WILL = {"msgtype": "m.notice", "body": "bot went offline"}


async def keep_alive_then_die(
    bot: DelayedAsyncClient, room_id: str, delay: timedelta, alive_for: float
) -> float:
    """Schedule the last will, restart it for ``alive_for`` s, then stop. Returns the time of
    the last successful restart (monotonic clock)."""
    support = await bot.delayed_events_support()
    print(support)
    scheduled = await bot.room_send_delayed(room_id, "m.room.message", LAST_WILL, delay)
    if not isinstance(scheduled, RoomSendDelayedResponse):
        raise SystemExit(f"could not schedule the last will: {scheduled}")
    print(f"last will scheduled ({scheduled.delay_id.short}), delay {delay.total_seconds()} s")
    last_restart = started = time.monotonic()
    while time.monotonic() - started < alive_for:
        await asyncio.sleep(delay.total_seconds() / 2)  # restart well inside the delay
        restarted = await bot.restart_delayed_event(scheduled.delay_id)
        if not isinstance(restarted, UpdateDelayedEventResponse):
            raise SystemExit(f"restart failed: {restarted}")
        last_restart = time.monotonic()
        print("  alive: timer restarted")
    print("bot stops restarting (as if it had crashed)")
    return last_restart


async def wait_for_message(watcher: DelayedAsyncClient, room_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = await watcher.room_messages(room_id, direction=MessageDirection.back, limit=20)
        if isinstance(resp, RoomMessagesResponse):
            for event in resp.chunk:
                if event.source.get("content") == LAST_WILL:
                    return str(event.source["sender"])
        await asyncio.sleep(0.05)
    raise SystemExit(f"the watcher saw nothing within {timeout} s")


async def demo(server: DevServer, delay: timedelta = timedelta(seconds=2)) -> float:
    """Run the story on ``server``; returns seconds from the last restart to the message."""
    bot_user, watcher_user = server.register_user("bot"), server.register_user("watcher")
    bot = DelayedAsyncClient(server.url, bot_user.user_id)
    bot.restore_login(bot_user.user_id, bot_user.device_id, bot_user.access_token)
    watcher = DelayedAsyncClient(server.url, watcher_user.user_id)
    watcher.restore_login(watcher_user.user_id, watcher_user.device_id, watcher_user.access_token)
    try:
        room = await bot.room_create(invite=[watcher_user.user_id])
        room_id = room.room_id  # type: ignore[union-attr]
        await watcher.join(room_id)
        last_restart = await keep_alive_then_die(
            bot, room_id, delay, alive_for=3 * delay.total_seconds()
        )
        sender = await wait_for_message(watcher, room_id, timeout=delay.total_seconds() + 10)
        elapsed = time.monotonic() - last_restart
        print(
            f"watcher received the last will from {sender} {elapsed:.2f} s after the last restart"
        )
        return elapsed
    finally:
        await bot.close()
        await watcher.close()


def main() -> None:
    print("starting a throwaway Synapse on 127.0.0.1 ...")
    with DevServer() as server:
        print(f"Synapse {server.version} at {server.url} (pid {server.pid})")
        asyncio.run(demo(server))
    print("Synapse stopped and its files deleted")


if __name__ == "__main__":
    main()
