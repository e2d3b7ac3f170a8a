"""Encrypted delayed messages against real Synapse, both generations.

The bot encrypts as nio's ``room_send`` would (members loaded, room key shared), then schedules
the ciphertext; a second client with encryption receives the fired event and decrypts it. A member
who joins after the scheduling gets the event but not the key: that is the documented limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from nio import (
    AsyncClientConfig,
    JoinResponse,
    KeysUploadResponse,
    MegolmEvent,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomMessageFormatted,
    RoomMessageNotice,
    RoomMessageText,
    SyncResponse,
)

from nio_delayed import (
    DelayedAsyncClient,
    DelayedEventSentError,
    DelayedEventSentResponse,
    DelayedEventsListResponse,
    ErrorKind,
    ExitPolicy,
    KeepAliveManager,
    RoomSendDelayedError,
    RoomSendDelayedResponse,
)
from nio_delayed.devserver import DevServer, DevUser

from .conftest import CURRENT_SYNAPSE, needs_e2e, unique

pytestmark = [pytest.mark.synapse, needs_e2e]

ENCRYPTION = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}


async def e2e_client(server: DevServer, user: DevUser, store: Path) -> DelayedAsyncClient:
    await asyncio.to_thread(store.mkdir)
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    client = DelayedAsyncClient(
        server.url, user.user_id, device_id=user.device_id, store_path=str(store), config=config
    )
    client.restore_login(user.user_id, user.device_id, user.access_token)
    assert client.olm is not None
    uploaded = await client.keys_upload()
    assert isinstance(uploaded, KeysUploadResponse), uploaded
    return client


@dataclass
class EncryptedRoom:
    server: DevServer
    room_id: str
    bot: DelayedAsyncClient
    watcher: DelayedAsyncClient

    async def received(self, client: DelayedAsyncClient, body: str, timeout: float) -> object:
        """Sync ``client`` until an event with ``body`` (decrypted) or an undecryptable event
        arrives in the room; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sync = await client.sync(timeout=1000)
            assert isinstance(sync, SyncResponse), sync
            room = sync.rooms.join.get(self.room_id)
            for event in room.timeline.events if room else []:
                if isinstance(event, MegolmEvent) or (
                    isinstance(event, RoomMessageFormatted) and event.body == body
                ):
                    return event
        pytest.fail(f"{body!r} did not arrive within {timeout} s")


@pytest.fixture
async def encrypted_room(synapse: DevServer, tmp_path: Path) -> AsyncIterator[EncryptedRoom]:
    bot_user = synapse.register_user(unique("e2ebot"))
    watcher_user = synapse.register_user(unique("e2ewatcher"))
    bot = await e2e_client(synapse, bot_user, tmp_path / "bot")
    watcher = await e2e_client(synapse, watcher_user, tmp_path / "watcher")
    try:
        created = await bot.room_create(invite=[watcher_user.user_id], initial_state=[ENCRYPTION])
        assert isinstance(created, RoomCreateResponse), created
        joined = await watcher.join(created.room_id)
        assert isinstance(joined, JoinResponse), joined
        for client in (bot, watcher):
            assert isinstance(await client.sync(timeout=0, full_state=True), SyncResponse)
        assert bot.rooms[created.room_id].encrypted
        yield EncryptedRoom(synapse, created.room_id, bot, watcher)
    finally:
        await bot.close()
        await watcher.close()


async def test_a_delayed_message_is_encrypted_then_decrypted_by_the_receiver(
    encrypted_room: EncryptedRoom,
) -> None:
    room = encrypted_room
    body = "encrypted, and late"
    content = {"msgtype": "m.text", "body": body}
    # As with room_send: the watcher's device is unverified, so nothing goes without consent.
    refused = await room.bot.room_send_delayed(room.room_id, "m.room.message", content, 1500)
    assert isinstance(refused, RoomSendDelayedError)
    assert refused.kind is ErrorKind.ENCRYPTION
    assert "ignore_unverified_devices=True" in refused.message
    resp = await room.bot.room_send_delayed(
        room.room_id, "m.room.message", content, 1500, ignore_unverified_devices=True
    )
    assert isinstance(resp, RoomSendDelayedResponse), str(resp)
    assert resp.encrypted
    listing = await room.bot.delayed_events()
    assert isinstance(listing, DelayedEventsListResponse)
    [scheduled] = [e for e in listing.scheduled if e.delay_id == resp.delay_id]
    # The server holds only ciphertext.
    assert scheduled.type == "m.room.encrypted"
    assert body not in str(scheduled.content)
    assert scheduled.content["algorithm"] == "m.megolm.v1.aes-sha2"

    event = await room.received(room.watcher, body, timeout=15)
    assert isinstance(event, RoomMessageText), event
    assert event.sender == room.bot.user_id
    assert event.decrypted


async def test_a_member_who_joins_after_scheduling_cannot_decrypt_it(
    encrypted_room: EncryptedRoom, tmp_path: Path
) -> None:
    room = encrypted_room
    late_user = room.server.register_user(unique("late"))
    late = await e2e_client(room.server, late_user, tmp_path / "late")
    try:
        content = {"msgtype": "m.text", "body": "before you came"}
        resp = await room.bot.room_send_delayed(
            room.room_id, "m.room.message", content, 3000, ignore_unverified_devices=True
        )
        assert isinstance(resp, RoomSendDelayedResponse), str(resp)
        invited = await room.bot.room_invite(room.room_id, late_user.user_id)
        assert isinstance(invited, RoomInviteResponse), invited
        assert isinstance(await late.join(room.room_id), JoinResponse)
        event = await room.received(late, "before you came", timeout=15)
        # It arrives, but the room key was shared before this member joined.
        assert isinstance(event, MegolmEvent), event
    finally:
        await late.close()


async def test_an_encrypted_switch_fires_readably_and_a_restarted_bot_replaces_its_leftover(
    encrypted_room: EncryptedRoom,
) -> None:
    room = encrypted_room
    offline = {"msgtype": "m.notice", "body": "encrypted bot offline"}
    first = KeepAliveManager(room.bot)
    switch = await first.add(
        room.room_id,
        "m.room.message",
        offline,
        delay=20_000,
        on_exit=ExitPolicy.KEEP,
        ignore_unverified_devices=True,
    )
    await first.close()  # as a crash would: the switch stays scheduled
    # The next process of the bot recognises the encrypted leftover by its readable key.
    second = KeepAliveManager(room.bot)
    replacement = await second.add(
        room.room_id,
        "m.room.message",
        offline,
        delay=20_000,
        on_exit=ExitPolicy.SEND,
        ignore_unverified_devices=True,
    )
    listing = await room.bot.delayed_events()
    assert isinstance(listing, DelayedEventsListResponse)
    assert [e.delay_id for e in listing.scheduled] == [replacement.delay_id]
    assert replacement.delay_id != switch.delay_id
    await second.close()  # sends it now
    event = await room.received(room.watcher, offline["body"], timeout=15)
    assert isinstance(event, RoomMessageNotice), event


async def test_the_bot_awaits_its_encrypted_reminder_through_its_own_decrypted_sync(
    encrypted_room: EncryptedRoom,
) -> None:
    """nio replaces the bot's copy of the fired event by the decrypted one, which it builds from
    the ciphertext alone; the delay id the server marked it with is carried over."""
    room = encrypted_room
    content = {"msgtype": "m.text", "body": "encrypted reminder"}
    resp = await room.bot.room_send_delayed(
        room.room_id, "m.room.message", content, 1500, ignore_unverified_devices=True
    )
    assert isinstance(resp, RoomSendDelayedResponse), str(resp)
    syncing = asyncio.create_task(room.bot.sync_forever(timeout=1000))
    try:
        sent = await room.bot.delayed_event_sent(resp.delay_id, timeout=timedelta(seconds=10))
    finally:
        syncing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await syncing
    if room.server.version != CURRENT_SYNAPSE:  # 1.142.1 does not mark fired events
        assert isinstance(sent, DelayedEventSentError)
        assert sent.kind is ErrorKind.NOT_SEEN
        return
    assert isinstance(sent, DelayedEventSentResponse), sent
    assert sent.event_type == "m.room.message"  # decrypted
    assert sent.event["content"]["body"] == "encrypted reminder"
