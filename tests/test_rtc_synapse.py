"""MatrixRTC membership on real Synapse, seen by a real call client: matrix-js-sdk's own
``MatrixRTCSession`` (tests/js/rtc_peer.mjs, the pinned 43.0.0) runs as a second member of
the call and reports who it lists. The bot is listed in each mode, a clean exit removes it at
once, and a SIGKILLed bot disappears within the delay plus one second. Legacy mode is also
checked from Python on both Synapse generations."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from nio import (
    Event,
    GetOpenIDTokenResponse,
    JoinResponse,
    MegolmEvent,
    MessageDirection,
    RoomCreateResponse,
    RoomGetStateEventResponse,
    RoomMessagesResponse,
    SyncResponse,
)

from nio_delayed import (
    DelayedAsyncClient,
    DelayedEventsListResponse,
    RtcMode,
    ServerLimits,
    SwitchState,
)
from nio_delayed.devserver import DevServer

from .conftest import RESULTS, Room, login, make_room, needs_e2e, unique
from .js_sdk import JS, cannot_run, require_installed
from .test_e2e_synapse import ENCRYPTION, e2e_client
from .test_examples import Example

pytestmark = pytest.mark.synapse

LEGACY_TYPE = "org.matrix.msc3401.call.member"
STICKY_TYPE = "org.matrix.msc4143.rtc.member"
#: The leave's delay in the SIGKILL tests (s).
KILL_DELAY = 4.0

Members = list[dict[str, str]]


@pytest.fixture(scope="module")
def node() -> str:
    reason = cannot_run()
    if reason is not None:
        pytest.skip(reason)
    require_installed()
    return shutil.which("node") or "node"


@pytest.fixture
async def any_room(synapse: DevServer) -> AsyncIterator[Room]:
    """A room on the shared Synapse of either generation (no sticky events on either)."""
    async for value in make_room(synapse):
        yield value


@pytest.fixture
async def sticky_room(sticky_synapse: DevServer) -> AsyncIterator[Room]:
    async for value in make_room(sticky_synapse):
        yield value


class Peer:
    """matrix-js-sdk's MatrixRTC session in node, logged in as the room's watcher."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        #: (js-sdk's wall clock in ms, the members it listed then), oldest first.
        self.snapshots: list[tuple[int, Members]] = []
        #: What else it printed (js-sdk's warnings), for a failure's message.
        self.output: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, node: str, room: Room, mode: str) -> Peer:
        watcher = room.watcher
        args = {
            "baseUrl": room.server.url,
            "accessToken": watcher.access_token,
            "userId": watcher.user_id,
            "deviceId": watcher.device_id,
            "roomId": room.room_id,
            "mode": mode,
        }
        process = await asyncio.create_subprocess_exec(
            node,
            str(JS / "rtc_peer.mjs"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert process.stdin is not None
        process.stdin.write(json.dumps(args).encode())
        process.stdin.close()
        peer = cls(process)
        # Synced, and a member of the call itself.
        await peer.wait_until(listing(watcher.user_id), timeout=30)
        return peer

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            if not raw.startswith(b"{"):  # js-sdk's own console output
                self.output.append(raw.decode(errors="replace").rstrip())
                continue
            line = json.loads(raw)
            if "members" in line:
                self.snapshots.append((line["at"], line["members"]))
                self._changed.set()

    async def wait_until(self, seen: Callable[[Members], bool], timeout: float) -> int:
        """js-sdk's wall-clock time (ms) of the first list since now that ``seen`` accepts,
        the current one included."""
        start = len(self.snapshots) - 1 if self.snapshots else 0
        deadline = time.monotonic() + timeout
        while True:
            for at, members in self.snapshots[start:]:
                if seen(members):
                    return at
            start = len(self.snapshots)
            left = deadline - time.monotonic()
            if left <= 0 or self.process.returncode is not None:
                pytest.fail(
                    f"js-sdk never listed what was expected: {self.snapshots[-3:]}; "
                    f"it printed: {self.output[-20:]}"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                continue

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()
        await self._reader


def listing(user_id: str, kind: str | None = None) -> Callable[[Members], bool]:
    return lambda members: any(
        m["user_id"] == user_id and (kind is None or m["kind"] == kind) for m in members
    )


def not_listing(user_id: str) -> Callable[[Members], bool]:
    return lambda members: not listing(user_id)(members)


#: js-sdk's name for each mode's wire form: sticky m.rtc.member ("rtc"), legacy state
#: ("session").
KIND = {"sticky": "rtc", "legacy": "session"}


@pytest.mark.parametrize("mode", ["sticky", "legacy"])
async def test_js_sdk_lists_the_bot_and_drops_it_at_once_on_a_clean_exit(
    node: str, sticky_room: Room, mode: str
) -> None:
    room = sticky_room
    bot_id, peer_id = room.bot.user_id, room.watcher.user_id
    peer = await Peer.start(node, room, mode)
    try:
        async with room.bot.rtc_membership(
            room.room_id, mode=mode, delay=timedelta(seconds=20)
        ) as call:
            assert call.mode is RtcMode(mode)
            await peer.wait_until(listing(bot_id, KIND[mode]), timeout=15)
            [(_, members)] = peer.snapshots[-1:]
            by_user = {m["user_id"]: m for m in members}
            # js-sdk lists both members of the call: the bot and itself.
            assert set(by_user) == {bot_id, peer_id}
            assert by_user[bot_id]["member_id"] == call.member_id
            assert by_user[bot_id]["device_id"] == room.bot.device_id
            left_at = time.time() * 1000
        gone_at = await peer.wait_until(not_listing(bot_id), timeout=15)
        seconds = (gone_at - left_at) / 1000
        RESULTS[f"rtc.{mode}.clean_exit_seen_after_s"] = round(seconds, 3)
        # Far inside the 20 s delay: the leave was sent at once, not by the server later.
        assert seconds < 10, seconds
        assert listing(peer_id)(peer.snapshots[-1][1])  # only the bot left
    finally:
        await peer.stop()


async def answered_ping(room: Room) -> str:
    await room.watcher.room_send(
        room.room_id, "m.room.message", {"msgtype": "m.text", "body": "!ping"}
    )
    pongs: list[str] = []

    async def answered() -> bool:
        pongs[:] = [
            str(m["content"].get("body"))
            for m in await room.messages()
            if str(m["content"].get("body")).startswith("pong")
        ]
        return bool(pongs)

    await room.wait_for(answered, timeout=15)
    return pongs[-1]


@pytest.mark.parametrize("mode", ["sticky", "legacy"])
async def test_js_sdk_drops_a_sigkilled_call_bot_within_the_delay(
    node: str, sticky_room: Room, mode: str
) -> None:
    room = sticky_room
    bot_id = room.bot.user_id
    peer = await Peer.start(node, room, mode)
    bot = Example(room, "call_bot.py", room.room_id, "--mode", mode, "--delay", str(KILL_DELAY))
    try:
        await bot.line("ready")
        await peer.wait_until(listing(bot_id, KIND[mode]), timeout=15)
        [listed] = [m for m in peer.snapshots[-1][1] if m["user_id"] == bot_id]
        assert listed["device_id"] == room.bot.device_id  # the token's device (whoami)
        assert await answered_ping(room) == f"pong (in the call, {mode})"
        # Longer than the delay: the leave has been restarted while the bot synced.
        await asyncio.sleep(KILL_DELAY + 1)
        assert listing(bot_id)(peer.snapshots[-1][1])
        killed_at = time.time() * 1000
        bot.process.send_signal(signal.SIGKILL)
        gone_at = await peer.wait_until(not_listing(bot_id), timeout=KILL_DELAY + 10)
        seconds = (gone_at - killed_at) / 1000
        RESULTS[f"rtc.{mode}.sigkill_seen_after_s"] = round(seconds, 3)
        assert seconds <= KILL_DELAY + 1, seconds
        assert listing(room.watcher.user_id)(peer.snapshots[-1][1])  # only the bot left
    finally:
        bot.close()
        await peer.stop()


# -- legacy mode on both Synapse generations, checked from Python ---------------------------


async def membership_state(room: Room, state_key: str) -> dict[str, Any] | None:
    resp = await room.watcher.room_get_state_event(room.room_id, LEGACY_TYPE, state_key)
    return resp.content if isinstance(resp, RoomGetStateEventResponse) else None


async def test_legacy_mode_on_either_synapse_joins_and_leaves(any_room: Room) -> None:
    room = any_room
    async with room.bot.rtc_membership(room.room_id, delay=timedelta(seconds=10)) as call:
        # AUTO: neither shared Synapse advertises sticky events.
        assert call.mode is RtcMode.LEGACY
        assert call.state_key is not None
        state = await membership_state(room, call.state_key)
        assert state is not None
        assert state["device_id"] == room.bot.device_id
        assert state["application"] == "m.call"
        # What a focus service is given to check the bot's identity (SFU credentials).
        token = await call.openid_token()
        assert isinstance(token, GetOpenIDTokenResponse), token
        assert token.matrix_server_name == "localhost"
    assert await membership_state(room, call.state_key) == {}


async def test_legacy_mode_on_either_synapse_leaves_when_the_bot_is_killed(any_room: Room) -> None:
    room = any_room
    bot = Example(room, "call_bot.py", room.room_id, "--mode", "legacy", "--delay", "2")
    state_key = f"_{room.bot.user_id}_{room.bot.device_id}_m.call"
    try:
        await bot.line("ready")
        await asyncio.sleep(3)  # longer than the delay: the leave is being restarted
        state = await membership_state(room, state_key)
        assert state is not None
        assert state.get("application") == "m.call"
        bot.process.send_signal(signal.SIGKILL)

        async def left() -> bool:
            return await membership_state(room, state_key) == {}

        assert await room.wait_for(left, timeout=8) <= 3.0
    finally:
        bot.close()


@pytest.fixture
async def stock_room(stock_synapse: DevServer) -> AsyncIterator[Room]:
    """A room on a Synapse of either generation with its own default rate limits."""
    async for value in make_room(stock_synapse):
        yield value


async def test_legacy_mode_keeps_its_leave_under_synapses_default_rate_limits(
    stock_room: Room,
) -> None:
    """Join, three delays of restarts (every second, the management limit's own rate), a
    refresh of the membership, and the leave at once on exit."""
    room = stock_room
    room.bot.delayed_events_limits = ServerLimits()  # Synapse's defaults, as the server has
    async with room.bot.rtc_membership(
        room.room_id, mode="legacy", delay=timedelta(seconds=3), expires=timedelta(seconds=4)
    ) as call:
        await asyncio.sleep(9)
        assert call.switch.state is SwitchState.ARMED
        assert call.switch.stats.restarts_ok >= 6
        assert call.switch.stats.losses == 0
        assert call.publications >= 2  # refreshed at 3 s and 6 s
        assert call.state_key is not None
    assert await membership_state(room, call.state_key) == {}


@needs_e2e
async def test_in_an_encrypted_room_the_sticky_membership_and_its_leave_are_encrypted(
    sticky_synapse: DevServer, tmp_path: Path
) -> None:
    """MSC4143 wants membership events encrypted in an encrypted room: the leave is scheduled
    as ciphertext, and the membership arrives encrypted and sticky, readable by members."""
    server = sticky_synapse
    bot_user, watcher_user = (
        server.register_user(unique("e2ebot")),
        server.register_user(unique("e2epeer")),
    )
    bot = await e2e_client(server, bot_user, tmp_path / "bot")
    watcher = await e2e_client(server, watcher_user, tmp_path / "watcher")
    without_encryption = await login(server, watcher_user)
    try:
        created = await bot.room_create(invite=[watcher_user.user_id], initial_state=[ENCRYPTION])
        assert isinstance(created, RoomCreateResponse), created
        assert isinstance(await watcher.join(created.room_id), JoinResponse)
        for client in (bot, watcher):
            assert isinstance(await client.sync(timeout=0, full_state=True), SyncResponse)
        async with bot.rtc_membership(
            created.room_id,
            mode="sticky",
            ignore_unverified_devices=True,
            delay=timedelta(seconds=20),
        ) as call:
            listing = await bot.delayed_events()
            assert isinstance(listing, DelayedEventsListResponse), listing
            [leave] = listing.scheduled
            assert leave.type == "m.room.encrypted"
            assert call.member_id not in str(leave.content)
            member = await decrypted_rtc_member(watcher, created.room_id, timeout=15)
            assert member.source["content"]["member"]["id"] == call.member_id
            # On the wire it is ciphertext, and sticky.
            raw = await without_encryption.room_messages(
                created.room_id, direction=MessageDirection.back, limit=20
            )
            assert isinstance(raw, RoomMessagesResponse), raw
            stickies = [e.source for e in raw.chunk if "msc4354_sticky" in e.source]
            assert {e["type"] for e in stickies} == {"m.room.encrypted"}
    finally:
        await bot.close()
        await watcher.close()
        await without_encryption.close()


async def decrypted_rtc_member(client: DelayedAsyncClient, room_id: str, timeout: float) -> Event:
    """Sync ``client`` until a decrypted ``m.rtc.member`` arrives in the room."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sync = await client.sync(timeout=1000)
        assert isinstance(sync, SyncResponse), sync
        room = sync.rooms.join.get(room_id)
        for event in room.timeline.events if room else []:
            if event.source.get("type") == STICKY_TYPE and event.decrypted:
                return event
            assert not isinstance(event, MegolmEvent), "a member could not decrypt it"
    pytest.fail(f"no decrypted m.rtc.member within {timeout} s")
