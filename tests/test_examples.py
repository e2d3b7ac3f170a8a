"""Every example in examples/, run as its own process against a real Synapse (both generations)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from nio import RoomCreateResponse, RoomGetStateEventResponse

from nio_delayed import DelayedEventsListResponse

from .conftest import Room, needs_niobot

pytestmark = pytest.mark.synapse

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SYNCING_BOTS = ["sync_bot.py", pytest.param("niobot_bot.py", marks=needs_niobot)]


class Example:
    """An example script running as the room's bot."""

    def __init__(self, room: Room, script: str, *args: str) -> None:
        bot = room.bot
        env = {
            **os.environ,
            "MATRIX_HOMESERVER": room.server.url,
            "MATRIX_USER_ID": bot.user_id,
            "MATRIX_ACCESS_TOKEN": bot.access_token,
        }
        self.process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    async def line(self, containing: str, timeout: float = 20) -> str:
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), timeout)
            if not line:
                pytest.fail(
                    f"the example exited ({self.process.wait()}) before printing {containing!r}"
                )
            if containing in line:
                return line

    def rest_of_output(self) -> str:
        """Everything it printed after the lines read so far (once it has exited)."""
        assert self.process.stdout is not None
        return self.process.stdout.read()

    def signal(self, sig: signal.Signals) -> int:
        self.process.send_signal(sig)
        return self.process.wait(20)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


async def state_of(room: Room, event_type: str, state_key: str) -> dict[str, object] | None:
    resp = await room.watcher.room_get_state_event(room.room_id, event_type, state_key)
    return resp.content if isinstance(resp, RoomGetStateEventResponse) else None


async def status(room: Room) -> object:
    """The bot's status (a switch's fired content also names its owner, the bot's device)."""
    state = await state_of(room, "org.example.bot.status", room.bot.user_id)
    return None if state is None else state.get("status")


async def bodies(room: Room) -> list[str]:
    return [str(e["content"].get("body")) for e in await room.messages()]


async def test_status_bot_is_online_while_alive_and_offline_when_killed(room: Room) -> None:
    bot = Example(room, "status_bot.py", room.room_id, "--delay", "2")
    try:
        await bot.line("online in")
        assert await status(room) == "online"
        await asyncio.sleep(3)  # longer than the delay: the switch is being restarted
        assert await status(room) == "online"
        bot.signal(signal.SIGKILL)

        async def offline() -> bool:
            return await status(room) == "offline"

        assert await room.wait_for(offline, timeout=4) <= 3.0
    finally:
        bot.close()


async def test_status_bot_goes_offline_at_once_on_a_clean_exit(room: Room) -> None:
    bot = Example(room, "status_bot.py", room.room_id, "--delay", "30")
    try:
        await bot.line("online in")
        assert bot.signal(signal.SIGTERM) == 0
        assert await status(room) == "offline"
    finally:
        bot.close()


async def test_leave_on_crash_takes_the_killed_bot_out_of_the_room(room: Room) -> None:
    bot = Example(room, "leave_on_crash.py", room.room_id, "--delay", "2")
    try:
        await bot.line("out of it")
        await asyncio.sleep(3)
        member = await state_of(room, "m.room.member", room.bot.user_id)
        assert member is not None
        assert member["membership"] == "join"  # still in: the switch is being restarted
        bot.signal(signal.SIGKILL)

        async def left() -> bool:
            member = await state_of(room, "m.room.member", room.bot.user_id)
            return member is not None and member.get("membership") == "leave"

        await room.wait_for(left, timeout=4)
    finally:
        bot.close()


async def test_reminder_bot_sets_lists_cancels_and_reminds_while_down(room: Room) -> None:
    bot = Example(room, "reminder_bot.py")
    try:
        await bot.line("ready")
        for command in ("!remind 3s drink water", "!remind 5m call mum", "!reminders"):
            await room.watcher.room_send(
                room.room_id, "m.room.message", {"msgtype": "m.text", "body": command}
            )

        async def listed() -> bool:
            return any(b.startswith("1. in") and "call mum" in b for b in await bodies(room))

        await room.wait_for(listed, timeout=10)
        [listing] = [b for b in await bodies(room) if b.startswith("1. in")]
        assert "drink water" in listing.split("\n")[0]  # soonest first
        await room.watcher.room_send(
            room.room_id, "m.room.message", {"msgtype": "m.text", "body": "!cancel 2"}
        )

        async def cancelled() -> bool:
            return "reminder 2 cancelled" in await bodies(room)

        await room.wait_for(cancelled, timeout=10)
        bot.signal(signal.SIGKILL)  # the bot is down; the reminder is on the server

        async def reminded() -> bool:
            return "⏰ drink water" in await bodies(room)

        await room.wait_for(reminded, timeout=8)
        assert "⏰ call mum" not in await bodies(room)
        listing_now = await room.bot.delayed_events()
        assert listing_now.scheduled == []  # type: ignore[union-attr]
    finally:
        bot.close()


async def test_self_destruct_redacts_or_refuses_old_room_versions(room: Room) -> None:
    created = await room.bot.room_create(room_version="11")
    assert isinstance(created, RoomCreateResponse)
    rooms = {"11": created.room_id, "default": room.room_id}
    default_version = "12" if room.server.version.startswith("1.163") else "10"
    for name, room_id in rooms.items():
        run = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(EXAMPLES / "self_destruct.py"), room_id, "gone", "--after", "1"],
            env={**os.environ, "MATRIX_HOMESERVER": room.server.url,
                 "MATRIX_USER_ID": room.bot.user_id, "MATRIX_ACCESS_TOKEN": room.bot.access_token},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if name == "default" and default_version == "10":
            assert run.returncode == 1
            assert "room version 10" in run.stderr
            continue
        assert run.returncode == 0, run.stdout + run.stderr
        event_id = run.stdout.split()[1].rstrip(";")

        async def redacted(room_id: str = room_id, event_id: str = event_id) -> bool:
            resp = await room.bot.room_get_event(room_id, event_id)
            return getattr(resp, "event", None) is not None and resp.event.source["content"] == {}  # type: ignore[union-attr]

        await room.wait_for(redacted, timeout=5)


async def test_many_rooms_keeps_one_switch_per_room_and_all_fire_when_killed(room: Room) -> None:
    extra = [await room.bot.room_create(invite=[room.watcher.user_id]) for _ in range(3)]
    room_ids = [room.room_id] + [r.room_id for r in extra]  # type: ignore[union-attr]
    for room_id in room_ids[1:]:
        await room.watcher.join(room_id)
    bot = Example(room, "many_rooms.py", *room_ids, "--delay", "2")
    try:
        await bot.line("armed 4 switches")
        status = await bot.line("4 switches {'armed': 4}", timeout=15)
        assert "0 failed" in status
        bot.signal(signal.SIGKILL)

        async def all_fired() -> bool:
            for room_id in room_ids:
                messages = await room.watcher.room_messages(room_id, limit=20)
                if not any(
                    e.source["content"].get("body") == "bot offline" for e in messages.chunk
                ):  # type: ignore[union-attr]
                    return False
            return True

        await room.wait_for(all_fired, timeout=6)
    finally:
        bot.close()


@pytest.mark.parametrize("script", SYNCING_BOTS)
async def test_a_syncing_bot_answers_while_its_switch_lives_and_a_sigterm_sends_offline_at_once(
    room: Room, script: str
) -> None:
    bot = Example(room, script, room.room_id, "--delay", "30")
    try:
        await bot.line("ready", timeout=30)
        assert await status(room) == "online"
        await room.watcher.room_send(
            room.room_id, "m.room.message", {"msgtype": "m.text", "body": "!ping"}
        )

        async def answered() -> bool:
            return any("pong" in body for body in await bodies(room))

        await room.wait_for(answered, timeout=15)  # the sync loop runs beside the keep-alive
        assert bot.signal(signal.SIGTERM) == 0
        # Sent by the exit policy at once, not by the server 30 s later.
        assert await status(room) == "offline"
        assert "stopped by SIGTERM" in await asyncio.to_thread(bot.rest_of_output)
        listing = await room.bot.delayed_events()
        assert isinstance(listing, DelayedEventsListResponse)
        assert listing.scheduled == []
    finally:
        bot.close()


@pytest.mark.parametrize("script", SYNCING_BOTS)
async def test_a_syncing_bot_killed_hard_goes_offline_one_delay_later(
    room: Room, script: str
) -> None:
    bot = Example(room, script, room.room_id, "--delay", "2")
    try:
        await bot.line("ready", timeout=30)
        await asyncio.sleep(3)  # longer than the delay: restarted while the sync loop runs
        assert await status(room) == "online"
        bot.signal(signal.SIGKILL)

        async def offline() -> bool:
            return await status(room) == "offline"

        assert await room.wait_for(offline, timeout=5) <= 3.0
    finally:
        bot.close()
