"""A nio-bot bot (``NioBot``) with a dead-man's switch: ``pip install '.[niobot]'`` (checkout).

    export MATRIX_HOMESERVER=... MATRIX_USER_ID=... MATRIX_ACCESS_TOKEN=...
    python examples/niobot_bot.py '!room:example.org' [--delay 30]

``NioBot`` subclasses nio's ``AsyncClient``, so the mixin goes in front of it, as with any client:
``class StatusBot(DelayedEventsMixin, NioBot)``. The switch is armed in the ``ready`` event, which
nio-bot sends after its first sync. ``NioBot.start()`` closes the bot when its sync loop ends,
and the mixin's ``close()`` stops the switch by its exit policy; ``stop_on_signals()`` makes
SIGINT and SIGTERM end that loop. SIGKILL or a crash: the server sends "offline" one delay later.

While it runs, the bot answers ``!ping`` with ``pong``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import timedelta

import niobot

from nio_delayed import AliveEvent, DelayedEventsMixin, ExitPolicy, KeepAliveError, stop_on_signals

STATUS = "org.example.bot.status"


class StatusBot(DelayedEventsMixin, niobot.NioBot):
    """A NioBot with delayed events and ``keep_alive``."""


async def main(room_id: str, delay: float) -> int:
    user_id = os.environ["MATRIX_USER_ID"]
    bot = StatusBot(
        os.environ["MATRIX_HOMESERVER"], user_id, device_id="niobot-example", command_prefix="!"
    )

    @bot.command()
    async def ping(ctx: niobot.Context) -> None:
        await ctx.respond("pong")

    failed = False

    @bot.on_event("ready")
    async def arm_switch(_first_sync: object) -> None:
        nonlocal failed
        try:
            await bot.keep_alive.add(
                room_id,
                STATUS,
                {"status": "offline"},
                state_key=user_id,
                delay=timedelta(seconds=delay),
                alive=AliveEvent(STATUS, {"status": "online"}, state_key=user_id),
                on_exit=ExitPolicy.SEND,
            )
        except KeepAliveError as exc:  # no switch: say so, and stop rather than run unguarded
            print(f"could not arm the switch: {exc}", file=sys.stderr, flush=True)
            failed = True
            bot.stop_sync_forever()
            return
        print(f"ready: syncing; offline {delay:g} s after this process dies", flush=True)

    async with stop_on_signals() as shutdown:
        await bot.start(access_token=os.environ["MATRIX_ACCESS_TOKEN"])  # closes the bot at the end
    if failed:
        return 1
    how = shutdown.signal.name if shutdown.signal else "itself"
    print(f"stopped by {how}; offline sent", flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("room_id")
    parser.add_argument("--delay", type=float, default=30.0, help="seconds (default 30)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.room_id, args.delay)))
