"""Quick start: a dead-man's switch. The bot's "bot went offline" message is scheduled on the
server and kept from firing while the bot lives; when the bot stops, the server sends it.

    make demo                      # starts a throwaway Synapse on 127.0.0.1 and runs this

The bot arms the switch with a 2 s delay; the keep-alive restarts it every ~0.67 s. After a few
seconds the bot stops restarting (as a crashed bot would: ``on_exit=ExitPolicy.KEEP`` leaves
the event armed) and the watcher sees the message about one delay after the last restart.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from nio import MessageDirection, RoomMessagesResponse

from nio_delayed import DelayedAsyncClient, ExitPolicy, SwitchEvent
from nio_delayed.devserver import DevServer

LAST_WILL = {"msgtype": "m.notice", "body": "bot went offline"}


def show(event: SwitchEvent) -> None:
    print(f"  switch {event.kind.value}: {event.message}")


async def live_then_die(bot: DelayedAsyncClient, room_id: str, delay: timedelta) -> float:
    """Keep a switch for a while, then stop restarting it. Returns the predicted moment the
    server sends the event (on the monotonic clock)."""
    print(await bot.delayed_events_support())
    bot.keep_alive.on_event(show)
    async with bot.dead_mans_switch(
        room_id, "m.room.message", LAST_WILL, delay=delay, on_exit=ExitPolicy.KEEP
    ) as switch:
        print(f"alive; restarting every {switch.restart_interval.total_seconds():.2f} s")
        await asyncio.sleep(3 * delay.total_seconds())
        stats = switch.stats
        print(f"  {stats.restarts_ok} restarts, smallest margin {stats.min_margin:.2f} s")
        due = time.monotonic() + (switch.deadline_in or 0)
    print("bot stops restarting (as if it had crashed)")
    return due


async def wait_for_message(watcher: DelayedAsyncClient, room_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = await watcher.room_messages(room_id, direction=MessageDirection.back, limit=20)
        if isinstance(resp, RoomMessagesResponse):
            for event in resp.chunk:
                if event.source.get("content", {}).get("body") == LAST_WILL["body"]:
                    return str(event.source["sender"])
        await asyncio.sleep(0.02)
    raise SystemExit(f"the watcher saw nothing within {timeout} s")


async def demo(server: DevServer, delay: timedelta = timedelta(seconds=2)) -> float:
    """Run the story on ``server``; returns seconds from the predicted deadline to the message
    reaching the watcher."""
    bot_user, watcher_user = server.register_user("bot"), server.register_user("watcher")
    bot = DelayedAsyncClient(server.url, bot_user.user_id)
    bot.restore_login(bot_user.user_id, bot_user.device_id, bot_user.access_token)
    watcher = DelayedAsyncClient(server.url, watcher_user.user_id)
    watcher.restore_login(watcher_user.user_id, watcher_user.device_id, watcher_user.access_token)
    try:
        room = await bot.room_create(invite=[watcher_user.user_id])
        room_id = room.room_id  # type: ignore[union-attr]
        await watcher.join(room_id)
        due = await live_then_die(bot, room_id, delay)
        sender = await wait_for_message(watcher, room_id, timeout=delay.total_seconds() + 10)
        late = time.monotonic() - due
        print(f"watcher received the last will from {sender}, {late:+.3f} s from its deadline")
        return late
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
