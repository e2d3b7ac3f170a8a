"""Encryption decisions without a server: bounded key sharing, and what is refused."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aioresponses import aioresponses
from nio import AsyncClientConfig
from nio.rooms import MatrixRoom

from nio_delayed import DelayedAsyncClient, ErrorKind, RequestPolicy, RoomSendDelayedError

from .conftest import needs_e2e
from .test_client_mocked import HS, ROOM, legacy_server

pytestmark = needs_e2e


@pytest.fixture
async def e2e_client(tmp_path: Path) -> AsyncIterator[DelayedAsyncClient]:
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    client = DelayedAsyncClient(
        HS, "@bot:hs.example", "DEV", store_path=str(tmp_path), config=config
    )
    client.restore_login("@bot:hs.example", "DEV", "token")
    client.delayed_events_policy = RequestPolicy(
        timeout=timedelta(milliseconds=100), max_attempts=1
    )
    assert client.olm is not None
    yield client
    await client.close()


async def test_a_key_share_that_hangs_is_bounded_and_leaves_the_room_usable(
    e2e_client: DelayedAsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = e2e_client
    room = client.rooms[ROOM] = MatrixRoom(ROOM, client.user_id, encrypted=True)
    room.members_synced = True
    shares = []

    async def hanging_share(room_id: str, **_: Any) -> None:
        # As nio does: it marks the room "sharing", then waits on the server (here: for ever).
        shares.append(room_id)
        client.sharing_session[room_id] = asyncio.Event()
        await asyncio.sleep(60)

    monkeypatch.setattr(client, "share_group_session", hanging_share)
    monkeypatch.setattr(type(client), "should_query_keys", property(lambda _: False))
    with aioresponses() as http:
        legacy_server(http)
        resp = await client.room_send_delayed(
            ROOM, "m.room.message", {"body": "x"}, timedelta(seconds=1)
        )
    assert isinstance(resp, RoomSendDelayedError)
    assert resp.kind is ErrorKind.NETWORK
    assert "timed out" in resp.message
    assert shares == [ROOM]
    assert ROOM not in client.sharing_session  # nio's marker is cleared: later sends don't hang


async def test_an_encrypted_room_the_client_has_not_synced_asks_for_a_sync(
    e2e_client: DelayedAsyncClient,
) -> None:
    with aioresponses() as http:
        http.get(  # before legacy_server's "not encrypted": the first match answers
            re.compile(r".*/state/m\.room\.encryption/.*"),
            payload={"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
        )
        legacy_server(http)
        resp = await e2e_client.room_send_delayed(
            ROOM, "m.room.message", {"body": "x"}, timedelta(seconds=1)
        )
    assert isinstance(resp, RoomSendDelayedError)
    assert resp.kind is ErrorKind.ENCRYPTION
    assert "sync first" in resp.message
