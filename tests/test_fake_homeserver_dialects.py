"""Dialects B (merged MSC, unstable prefix) and C (stable), which no installable server speaks yet.

These run against nio_delayed.testing.FakeHomeserver, which follows the MSC text.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from nio_delayed import (
    DelayedAsyncClient,
    DelayedEventsListResponse,
    DelayedEventsSupportResponse,
    DelayedEventStatus,
    Dialect,
    ErrorKind,
    GetDelayedEventResponse,
    RequestPolicy,
    RoomPutStateDelayedResponse,
    RoomSendDelayedError,
    RoomSendDelayedResponse,
    UpdateDelayedEventError,
    UpdateDelayedEventResponse,
)
from nio_delayed.testing import FakeHomeserver, Fault

from .conftest import fake_client

ROOM = "!room:fake"
TEXT = {"msgtype": "m.text", "body": "offline"}


@pytest.fixture(params=[Dialect.STABLE, Dialect.UNSTABLE])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[FakeHomeserver]:
    stable = request.param is Dialect.STABLE
    async with FakeHomeserver(stable=stable, unstable=not stable, max_scheduled=30) as fake:
        yield fake


@pytest.fixture
async def client(server: FakeHomeserver) -> AsyncIterator[DelayedAsyncClient]:
    client = await fake_client(server)
    client.delayed_events_policy = RequestPolicy(
        timeout=timedelta(seconds=2), backoff_initial=timedelta(milliseconds=10)
    )
    yield client
    await client.close()


async def schedule(
    client: DelayedAsyncClient, delay: timedelta = timedelta(minutes=1)
) -> RoomSendDelayedResponse:
    resp = await client.room_send_delayed(ROOM, "m.room.message", TEXT, delay)
    assert isinstance(resp, RoomSendDelayedResponse), resp
    return resp


async def test_dialect_is_chosen_from_what_is_advertised(
    client: DelayedAsyncClient, server: FakeHomeserver
) -> None:
    support = await client.delayed_events_support()
    assert isinstance(support, DelayedEventsSupportResponse)
    assert support.dialect is (Dialect.STABLE if server.stable else Dialect.UNSTABLE)
    assert (support.max_delay_ms, support.max_scheduled) == (86_400_000, 30)


async def test_stable_is_preferred_when_both_are_advertised() -> None:
    async with FakeHomeserver(stable=True, unstable=True) as fake:
        client = await fake_client(fake)
        support = await client.delayed_events_support()
        await client.close()
    assert isinstance(support, DelayedEventsSupportResponse)
    assert support.dialect is Dialect.STABLE
    assert not fake.requests_to("/delayed_event/")  # no probe was needed


async def test_message_fires_after_its_delay(
    client: DelayedAsyncClient, server: FakeHomeserver
) -> None:
    resp = await schedule(client, timedelta(milliseconds=300))
    assert server.room_events == []
    await asyncio.sleep(0.6)
    [event] = server.room_events
    assert (event["room_id"], event["type"], event["content"]) == (ROOM, "m.room.message", TEXT)
    found = await client.get_delayed_event(resp.delay_id)
    assert isinstance(found, GetDelayedEventResponse)
    assert found.delayed_event.status is DelayedEventStatus.SENT
    assert found.delayed_event.event_id == event["event_id"]


async def test_state_event_with_empty_state_key(
    client: DelayedAsyncClient, server: FakeHomeserver
) -> None:
    resp = await client.room_put_state_delayed(
        ROOM, "m.room.topic", {"topic": "bye"}, timedelta(milliseconds=100)
    )
    assert isinstance(resp, RoomPutStateDelayedResponse), resp
    await asyncio.sleep(0.3)
    [event] = server.room_events
    assert event["state_key"] == ""


async def test_restart_keeps_it_from_firing(
    client: DelayedAsyncClient, server: FakeHomeserver
) -> None:
    resp = await schedule(client, timedelta(milliseconds=300))
    for _ in range(5):
        await asyncio.sleep(0.15)
        assert isinstance(
            await client.restart_delayed_event(resp.delay_id), UpdateDelayedEventResponse
        )
    assert server.room_events == []
    await asyncio.sleep(0.5)
    assert len(server.room_events) == 1


async def test_cancel_send_and_the_conflicts_between_them(
    client: DelayedAsyncClient, server: FakeHomeserver
) -> None:
    cancelled, sent = await schedule(client), await schedule(client)
    assert isinstance(
        await client.cancel_delayed_event(cancelled.delay_id), UpdateDelayedEventResponse
    )
    assert isinstance(
        await client.send_delayed_event_now(sent.delay_id), UpdateDelayedEventResponse
    )
    assert len(server.room_events) == 1
    # Repeating an outcome succeeds (safe retries); contradicting it is a conflict.
    assert isinstance(
        await client.cancel_delayed_event(cancelled.delay_id), UpdateDelayedEventResponse
    )
    assert isinstance(
        await client.send_delayed_event_now(sent.delay_id), UpdateDelayedEventResponse
    )
    for call, delay_id in [
        (client.restart_delayed_event, cancelled.delay_id),
        (client.send_delayed_event_now, cancelled.delay_id),
        (client.cancel_delayed_event, sent.delay_id),
        (client.restart_delayed_event, sent.delay_id),
    ]:
        resp = await call(delay_id)
        assert isinstance(resp, UpdateDelayedEventError)
        assert (resp.kind, resp.http_status) == (ErrorKind.CONFLICT, 409)
    assert len(server.room_events) == 1
    # The merged MSC authenticates management (Synapse does not): the token always goes.
    assert all(r.authenticated for r in server.requests_to("/delayed_events/"))


async def test_lookup_reports_each_outcome(
    client: DelayedAsyncClient, server: FakeHomeserver
) -> None:
    scheduled, cancelled = await schedule(client), await schedule(client)
    await client.cancel_delayed_event(cancelled.delay_id)
    for delay_id, status in [
        (scheduled.delay_id, DelayedEventStatus.SCHEDULED),
        (cancelled.delay_id, DelayedEventStatus.CANCELLED),
    ]:
        found = await client.get_delayed_event(delay_id)
        assert isinstance(found, GetDelayedEventResponse)
        assert found.delayed_event.status is status
        assert found.delayed_event.delay_ms == 60_000
    unknown = await client.get_delayed_event("fake_unknown")
    assert unknown.kind is ErrorKind.NOT_FOUND  # type: ignore[union-attr]


async def test_listing_follows_pagination(
    client: DelayedAsyncClient, server: FakeHomeserver
) -> None:
    ids = {(await schedule(client)).delay_id for _ in range(25)}
    listing = await client.delayed_events()
    assert isinstance(listing, DelayedEventsListResponse)
    assert {e.delay_id for e in listing.scheduled} == ids
    assert len(server.requests_to("/delayed_events?from=")) == 2  # pages of 10


async def test_transaction_id_replay_gives_the_same_delay_id(client: DelayedAsyncClient) -> None:
    first = await client.room_send_delayed(
        ROOM, "m.room.message", TEXT, timedelta(seconds=5), tx_id="once"
    )
    again = await client.room_send_delayed(
        ROOM, "m.room.message", TEXT, timedelta(seconds=5), tx_id="once"
    )
    assert isinstance(first, RoomSendDelayedResponse)
    assert isinstance(again, RoomSendDelayedResponse)
    assert first.delay_id == again.delay_id


async def test_server_maximum_delay_is_enforced(server: FakeHomeserver) -> None:
    server.max_delay_ms = None  # not published: the server's own refusal must come through
    client = await fake_client(server)
    try:
        await client.delayed_events_support()
        server.max_delay_ms = 1000
        resp = await client.room_send_delayed(
            ROOM, "m.room.message", TEXT, timedelta(seconds=1, milliseconds=1)
        )
        assert isinstance(resp, RoomSendDelayedError)
        assert (resp.kind, resp.max_delay_ms, resp.http_status) == (
            ErrorKind.DELAY_TOO_LARGE,
            1000,
            400,
        )
    finally:
        await client.close()


async def test_too_many_scheduled_is_rate_limited_with_the_retry_hint(
    client: DelayedAsyncClient,
) -> None:
    for _ in range(30):
        await schedule(client, timedelta(minutes=2))
    resp = await client.room_send_delayed(ROOM, "m.room.message", TEXT, timedelta(seconds=1))
    assert isinstance(resp, RoomSendDelayedError)
    assert resp.kind is ErrorKind.RATE_LIMITED
    assert resp.retry_after_ms is not None
    assert 100_000 <= resp.retry_after_ms <= 120_000


async def test_dropped_connection_on_restart_is_retried(
    client: DelayedAsyncClient, server: FakeHomeserver
) -> None:
    resp = await schedule(client)
    server.inject(Fault(path_contains="/restart", drop=True, times=2))
    restarted = await client.restart_delayed_event(resp.delay_id)
    assert isinstance(restarted, UpdateDelayedEventResponse), restarted
    assert len(server.requests_to("/restart")) == 3


async def test_slow_answers_time_out_within_the_policy(
    client: DelayedAsyncClient, server: FakeHomeserver
) -> None:
    resp = await schedule(client)
    server.inject(Fault(path_contains="/cancel", latency=1.0, times=None))
    cancelled = await client.cancel_delayed_event(
        resp.delay_id, policy=RequestPolicy(timeout=timedelta(milliseconds=200), max_attempts=3)
    )
    assert isinstance(cancelled, UpdateDelayedEventError)
    assert cancelled.kind is ErrorKind.NETWORK
    # A cancel is not retried after an unanswered attempt: on Synapse a repeat would say 404.
    assert len(server.requests_to("/cancel")) == 1


async def test_a_server_without_the_feature_never_receives_a_delayed_event() -> None:
    """This fake sends /send events at once, ignoring the delay, as such servers do."""
    async with FakeHomeserver(delayed_events=False) as fake:
        client = await fake_client(fake)
        try:
            resp = await client.room_send_delayed(
                ROOM, "m.room.message", TEXT, timedelta(minutes=1)
            )
            state = await client.room_put_state_delayed(
                ROOM, "m.room.topic", {}, timedelta(minutes=1)
            )
        finally:
            await client.close()
    assert resp.kind is ErrorKind.UNSUPPORTED  # type: ignore[union-attr]
    assert state.kind is ErrorKind.UNSUPPORTED  # type: ignore[union-attr]
    assert fake.room_events == []
    assert [r.method for r in fake.requests] == ["GET", "GET"]  # versions and capabilities
