"""Access tokens and whole delay_ids never reach logs or reprs."""

from __future__ import annotations

import logging

import pytest

from nio_delayed import (
    DelayedEventsListResponse,
    GetDelayedEventResponse,
    RoomSendDelayedResponse,
)
from nio_delayed.testing import FakeHomeserver

from .conftest import fake_client


async def test_full_api_lifecycle_logs_no_secret(
    fake: FakeHomeserver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await fake_client(fake)
    token = client.access_token
    results: list[object] = []
    try:
        scheduled = await client.room_send_delayed("!r:fake", "m.room.message", {"b": 1}, 5000)
        assert isinstance(scheduled, RoomSendDelayedResponse)
        delay_id = str(scheduled.delay_id)
        results.append(scheduled)
        results.append(await client.restart_delayed_event(delay_id))
        found = await client.get_delayed_event(delay_id)
        assert isinstance(found, GetDelayedEventResponse)
        results.extend([found, found.delayed_event])
        listing = await client.delayed_events()
        assert isinstance(listing, DelayedEventsListResponse)
        results.append(listing)
        results.append(await client.send_delayed_event_now(delay_id))
        results.append(await client.restart_delayed_event(delay_id))  # a 409 error
    finally:
        await client.close()

    assert any("restart" in r.getMessage() for r in caplog.records)  # requests were logged
    for record in caplog.records:
        text = record.getMessage()
        assert token not in text
        assert delay_id not in text
    for result in results:
        assert delay_id not in repr(result)
        assert delay_id not in str(result)
        assert token not in repr(result)
