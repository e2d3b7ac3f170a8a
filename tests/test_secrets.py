"""Access tokens and whole delay_ids never reach logs or reprs."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from nio_delayed import (
    DelayedEventsListResponse,
    GetDelayedEventResponse,
    KeepAliveManager,
    RoomSendDelayedResponse,
    SwitchEvent,
    SwitchEventKind,
)
from nio_delayed.testing import FakeClock, FakeHomeserver, Fault

from .conftest import fake_client


async def test_full_api_lifecycle_logs_no_secret(
    fake: FakeHomeserver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await fake_client(fake)
    token = client.access_token
    results: list[object] = []
    try:
        scheduled = await client.room_send_delayed(
            "!r:fake", "m.room.message", {"b": 1}, timedelta(seconds=5)
        )
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


async def test_keep_alive_lifecycle_logs_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    events: list[SwitchEvent] = []
    async with FakeHomeserver(clock=clock) as server:
        client = await fake_client(server)
        token = client.access_token
        manager = KeepAliveManager(client, clock=clock)
        manager.on_event(events.append)
        switch = await manager.add(
            "!r:fake", "m.room.message", {"body": "bye"}, delay=timedelta(seconds=30)
        )
        first_id = str(switch.delay_id)
        server.inject(Fault(path_contains="/restart", status=503, body="down", times=2))
        await clock.advance(25)
        server.forget(first_id)  # lost: looked up, re-armed
        await clock.advance(15)
        second_id = str(switch.delay_id)
        assert second_id != first_id
        await manager.close()
        await client.close()

    kinds = {e.kind for e in events}
    assert {SwitchEventKind.AT_RISK, SwitchEventKind.LOST, SwitchEventKind.REARMED} <= kinds
    texts = [r.getMessage() for r in caplog.records] + [repr(switch)]
    texts += [repr(e) for e in events] + [e.message for e in events]
    for text in texts:
        for secret in (token, first_id, second_id):
            assert secret not in text
        assert "bye" not in text  # content stays out of logs and reprs
