"""Reminder bot: reminders are scheduled on the server, so they arrive even while the bot is down.

    export MATRIX_HOMESERVER=... MATRIX_USER_ID=... MATRIX_ACCESS_TOKEN=...
    python examples/reminder_bot.py

Invite the bot to a room (it joins by itself), then:

    !remind 10m buy milk    the server sends "⏰ buy milk" in 10 minutes, as the bot
    !reminders              the room's pending reminders, numbered, soonest first
    !cancel 2               cancel reminder 2 of that list

Durations: 30s, 10m, 2h, up to the server's maximum delay. Each reminder is a delayed message
whose content carries ``org.example.reminder``, which is how ``!reminders`` tells them apart
from other delayed events of the account.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from datetime import timedelta

from nio import InviteMemberEvent, MatrixRoom, RoomMessageText

from nio_delayed import (
    DelayedAsyncClient,
    DelayedEvent,
    DelayedEventsListResponse,
    RoomSendDelayedResponse,
)

MARK = "org.example.reminder"
DURATION = re.compile(r"^(\d+)(s|m|h)$")
SECONDS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> timedelta | None:
    match = DURATION.match(text)
    return timedelta(seconds=int(match[1]) * SECONDS[match[2]]) if match else None


class ReminderBot:
    def __init__(self, client: DelayedAsyncClient) -> None:
        self.client = client

    async def reply(self, room_id: str, text: str) -> None:
        await self.client.room_send(
            room_id, "m.room.message", {"msgtype": "m.notice", "body": text}
        )

    async def pending(self, room_id: str) -> list[DelayedEvent] | str:
        listing = await self.client.delayed_events()
        if not isinstance(listing, DelayedEventsListResponse):
            return f"cannot list reminders: {listing.message}"
        mine = [e for e in listing.scheduled if e.room_id == room_id and MARK in e.content]
        return sorted(mine, key=lambda e: e.due_ts or 0)

    async def on_message(self, room: MatrixRoom, event: RoomMessageText) -> None:
        if event.sender == self.client.user_id:
            return
        command, _, rest = event.body.strip().partition(" ")
        if command == "!remind":
            when, _, text = rest.partition(" ")
            delay = parse_duration(when)
            if delay is None or not text:
                return await self.reply(room.room_id, "usage: !remind 10m what to remember")
            content = {"msgtype": "m.text", "body": f"⏰ {text}", MARK: {"for": event.sender}}
            resp = await self.client.room_send_delayed(
                room.room_id, "m.room.message", content, delay
            )
            if isinstance(resp, RoomSendDelayedResponse):
                return await self.reply(room.room_id, f"reminder set for {when} from now")
            return await self.reply(room.room_id, f"could not set it: {resp.message}")
        if command == "!reminders":
            pending = await self.pending(room.room_id)
            if isinstance(pending, str) or not pending:
                return await self.reply(room.room_id, pending or "no pending reminders")
            now = time.time() * 1000
            lines = [
                f"{n}. in {max(0, ((e.due_ts or now) - now) / 1000):.0f}s: {e.content.get('body')}"
                for n, e in enumerate(pending, 1)
            ]
            return await self.reply(room.room_id, "\n".join(lines))
        if command == "!cancel":
            pending = await self.pending(room.room_id)
            if isinstance(pending, str):
                return await self.reply(room.room_id, pending)
            if not rest.isdigit() or not 1 <= int(rest) <= len(pending):
                return await self.reply(
                    room.room_id, f"usage: !cancel N, with N from 1 to {len(pending)}"
                )
            cancelled = await self.client.cancel_delayed_event(pending[int(rest) - 1].delay_id)
            done = (
                "cancelled" if not hasattr(cancelled, "kind") else f"could not cancel: {cancelled}"
            )
            return await self.reply(room.room_id, f"reminder {rest} {done}")
        return None

    async def on_invite(self, room: MatrixRoom, event: InviteMemberEvent) -> None:
        if event.state_key == self.client.user_id and event.membership == "invite":
            await self.client.join(room.room_id)


async def main() -> None:
    user_id = os.environ["MATRIX_USER_ID"]
    client = DelayedAsyncClient(os.environ["MATRIX_HOMESERVER"], user_id)
    client.restore_login(user_id, "reminder-bot", os.environ["MATRIX_ACCESS_TOKEN"])
    bot = ReminderBot(client)
    try:
        await client.sync(timeout=0, full_state=True)  # start from now: old commands are history
        client.add_event_callback(bot.on_message, RoomMessageText)  # type: ignore[arg-type]
        client.add_event_callback(bot.on_invite, InviteMemberEvent)  # type: ignore[arg-type]
        print("reminder bot ready", flush=True)
        await client.sync_forever(timeout=30_000)
    finally:
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
