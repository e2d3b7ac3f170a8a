"""Messages for encrypted rooms: encrypted as nio's ``room_send`` would, before scheduling.

Nothing in plaintext goes into an encrypted room by accident: a room the client has not synced is
asked about first.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

from nio.client.async_client import AsyncClient
from nio.exceptions import (
    EncryptionError,
    GroupEncryptionError,
    LocalProtocolError,
    OlmTrustError,
)

from ..errors import ErrorInfo, ErrorKind
from ..request_builders import state_event_request
from ..transport import RequestPolicy
from .request_path import RequestPath
from .state import ClientState

__all__ = ["EncryptionLayer"]

_NO_E2E = (
    "{} is encrypted and this client cannot encrypt (install nio-delayed[e2e] and give the "
    "client a store_path); nothing was sent: no plaintext into an encrypted room"
)
# How long a room the client has not synced is taken to be unencrypted before asking again.
# Encryption, once on, stays on: that answer is kept for good.
_UNENCRYPTED_TTL = 300.0


class EncryptionLayer:
    """``kept_readable``: content fields copied beside the ciphertext, readable by the server
    (names that say nothing secret, such as the keep-alive's switch key)."""

    def __init__(
        self,
        client: AsyncClient,
        state: ClientState,
        path: RequestPath,
        kept_readable: tuple[str, ...] = (),
    ) -> None:
        self._client = client
        self._state = state
        self._path = path
        self._kept_readable = kept_readable

    async def message_for(
        self,
        room_id: str,
        event_type: str,
        content: dict[str, Any],
        ignore_unverified_devices: bool,
        policy: RequestPolicy | None,
    ) -> tuple[str, dict[str, Any]] | ErrorInfo:
        """The (type, content) to send for a message: encrypted if the room is."""
        encrypted = await self._room_encrypted(room_id, policy)
        if isinstance(encrypted, ErrorInfo) or not encrypted:
            return encrypted if isinstance(encrypted, ErrorInfo) else (event_type, content)
        client = self._client
        if client.olm is None:
            return ErrorInfo(ErrorKind.UNSUPPORTED, _NO_E2E.format(room_id))
        if room_id not in client.rooms:
            return ErrorInfo(
                ErrorKind.ENCRYPTION,
                f"{room_id} is encrypted and the client has not synced it yet (its members are "
                "unknown): sync first; nothing was sent",
            )
        bound = self._path.policy(policy)
        try:
            # nio's own requests retry without end: bound the whole preparation.
            await asyncio.wait_for(
                self._share_room_key(room_id, ignore_unverified_devices),
                bound.timeout * bound.max_attempts,
            )
            sent_type, sent_content = client.encrypt(room_id, event_type, content)
            sent_content = dict(sent_content)
            for name in self._kept_readable:
                if name in content:
                    sent_content[name] = content[name]
        except asyncio.TimeoutError:
            return ErrorInfo(
                ErrorKind.NETWORK,
                f"sharing the room key of {room_id} timed out; nothing was sent",
            )
        except (OlmTrustError, EncryptionError, GroupEncryptionError, LocalProtocolError) as exc:
            hint = (
                " (pass ignore_unverified_devices=True to share with them anyway)"
                if isinstance(exc, OlmTrustError)
                else ""
            )
            return ErrorInfo(
                ErrorKind.ENCRYPTION,
                f"could not encrypt for {room_id}: {exc}{hint}; nothing was sent",
            )
        return sent_type, sent_content

    async def _share_room_key(self, room_id: str, ignore_unverified_devices: bool) -> None:
        """What nio's ``room_send`` does before it encrypts: load the members, query their
        keys, share the group session (or wait for a share under way)."""
        client = self._client
        assert client.olm is not None
        if not client.rooms[room_id].members_synced:
            await client.joined_members(room_id)
        # Unlike room_send, also when the members were known: a client that syncs with sync()
        # rather than sync_forever() has nobody else to query new devices' keys.
        if client.should_query_keys:
            await client.keys_query()
        if client.olm.should_share_group_session(room_id):
            sharing = client.sharing_session.get(room_id)
            if sharing is not None:
                await sharing.wait()
            else:
                try:
                    await client.share_group_session(
                        room_id, ignore_unverified_devices=ignore_unverified_devices
                    )
                except asyncio.CancelledError:
                    # Cancelled (by our time-out) during its key claim, nio leaves its "sharing"
                    # marker behind, and every later send into the room would wait on it.
                    marker = client.sharing_session.pop(room_id, None)
                    if marker is not None:
                        marker.set()
                    raise

    async def _room_encrypted(self, room_id: str, policy: RequestPolicy | None) -> bool | ErrorInfo:
        """Whether the room is encrypted: from the sync, or, for a room the client has not
        synced, from the server."""
        room = self._client.rooms.get(room_id)
        if room is not None:
            return bool(room.encrypted)
        known = self._state.encryption.get(room_id)
        if known is True or (
            isinstance(known, float) and time.monotonic() - known < _UNENCRYPTED_TTL
        ):
            return known is True
        body = await self._path.json(state_event_request(room_id, "m.room.encryption", ""), policy)
        if isinstance(body, ErrorInfo):
            if body.kind is not ErrorKind.NOT_FOUND:
                return replace(
                    body,
                    message=f"could not learn whether {room_id} is encrypted: {body.message}; "
                    "nothing was sent",
                )
            self._state.encryption[room_id] = time.monotonic()
            return False
        content = body.get("content")
        if not isinstance(content, dict) or not isinstance(content.get("algorithm"), str):
            return ErrorInfo(
                ErrorKind.SERVER_ERROR,
                f"could not learn whether {room_id} is encrypted: the answer is not a state "
                "event; nothing was sent",
                http_status=200,
            )
        self._state.encryption[room_id] = True
        return True
