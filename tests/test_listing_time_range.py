"""The listing's time range (``due_from``/``due_until``, ``list --since/--until``): sent to an
MSC4486 server, applied by the client on every listing; on the fake homeserver's two listings
and on real Synapse's older one."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from nio_delayed import (
    DelayedAsyncClient,
    DelayedEvent,
    DelayedEventsListError,
    DelayedEventsListResponse,
    DelayedEventsSupportResponse,
    ErrorKind,
    Listing,
    RoomSendDelayedResponse,
    UpdateDelayedEventResponse,
)
from nio_delayed.request_builders import HttpRequest
from nio_delayed.testing import FakeHomeserver
from nio_delayed.transport import HttpAnswer

from .conftest import Room, fake_client
from .test_cli import cli

ROOM = "!room:fake"
TEXT = {"msgtype": "m.text", "body": "later"}
MS = timedelta(milliseconds=1)


@pytest.fixture(params=["msc4486", "draft"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[FakeHomeserver]:
    """The default fake (merged MSC4140, MSC4486 listing: the server bounds the range), or the
    older revision (the MSC4140 listing, which lists everything: the client bounds it)."""
    options: dict[str, Any] = (
        {} if request.param == "msc4486" else {"msc4486": False, "revision": "draft"}
    )
    async with FakeHomeserver(**options) as server:
        yield server


@pytest.fixture
async def client(server: FakeHomeserver) -> AsyncIterator[DelayedAsyncClient]:
    client = await fake_client(server)
    yield client
    await client.close()


async def schedule(client: DelayedAsyncClient, delay: timedelta) -> str:
    resp = await client.room_send_delayed(ROOM, "m.room.message", TEXT, delay)
    assert isinstance(resp, RoomSendDelayedResponse), resp
    return resp.delay_id


def due(event: DelayedEvent) -> datetime:
    """When the server was to send it, as the listing's range means it."""
    assert event.since_ts is not None
    assert event.delay_ms is not None
    return datetime.fromtimestamp((event.since_ts + event.delay_ms) / 1000, timezone.utc)


async def listed(client: DelayedAsyncClient, **filters: Any) -> list[DelayedEvent]:
    found = await client.delayed_events(**filters)
    assert isinstance(found, DelayedEventsListResponse), found
    return found.delayed_events


async def test_the_range_bounds_when_events_are_due_both_ends_included(
    client: DelayedAsyncClient, server: FakeHomeserver
) -> None:
    first = await schedule(client, timedelta(seconds=10))
    middle = await schedule(client, timedelta(seconds=20))
    last = await schedule(client, timedelta(seconds=30))
    # Sent at once by hand: it keeps its place at the end of its 25 s, not at its sending.
    sent_early = await schedule(client, timedelta(seconds=25))
    assert isinstance(await client.send_delayed_event_now(sent_early), UpdateDelayedEventResponse)
    by_id = {e.delay_id: e for e in await listed(client)}
    at = due(by_id[middle])

    async def ids(**bounds: datetime) -> set[str]:
        return {e.delay_id for e in await listed(client, **bounds)}

    assert await ids(due_from=at) == {middle, sent_early, last}
    assert await ids(due_until=at) == {first, middle}
    assert await ids(due_from=at, due_until=at) == {middle}
    assert await ids(due_from=at + MS / 2) == {sent_early, last}  # a part of a ms rounds up
    assert await ids(due_until=at - MS / 2) == {first}  # and down at the other end
    assert await ids(due_from=due(by_id[last]) + MS) == set()
    assert await ids(due_until=datetime.now(timezone.utc) + timedelta(seconds=5)) == set()
    # Any time zone names the same moment.
    assert await ids(due_until=at.astimezone(timezone(timedelta(hours=-7)))) == {first, middle}
    asked = server.requests_to("from_ts=")
    if server.msc4486:  # the server was asked, in whole milliseconds
        assert asked
        assert f"from_ts={(at - datetime(1970, 1, 1, tzinfo=timezone.utc)) // MS}" in asked[0].path
    else:  # the older listing takes no range
        assert not asked


async def test_a_range_follows_every_page(
    client: DelayedAsyncClient, server: FakeHomeserver
) -> None:
    for seconds in range(100, 125):
        await schedule(client, timedelta(seconds=seconds))
    everything = sorted(await listed(client), key=due)
    before = len(server.requests_to("/delayed_events"))
    found = await listed(client, due_from=due(everything[7]), due_until=due(everything[18]))
    assert {e.delay_id for e in found} == {e.delay_id for e in everything[7:19]}  # twelve
    pages = len(server.requests_to("/delayed_events")) - before
    # MSC4486 pages over the twelve (10 a page); the older listing over all 25, filtered here.
    assert pages == (2 if server.msc4486 else 3)


class ScriptedListing:
    """A transport for a server whose older listing gives an event without its times."""

    async def send(self, request: HttpRequest, timeout: float) -> HttpAnswer:
        answers = {
            "/_matrix/client/versions": {"unstable_features": {"org.matrix.msc4140.stable": True}},
            "/_matrix/client/v3/capabilities": {"capabilities": {}},
            "/_matrix/client/v1/delayed_events": {
                "delayed_events": [
                    {"delay_id": "abc", "room_id": ROOM, "type": "m.room.message", "content": {}}
                ]
            },
        }
        return HttpAnswer(200, json.dumps(answers[request.path]).encode())

    async def close(self) -> None:
        pass


async def test_an_event_whose_times_are_unknown_is_outside_every_range() -> None:
    client = DelayedAsyncClient("https://hs.invalid", "@bot:hs.invalid")
    client.delayed_events_transport = ScriptedListing()
    try:
        assert [e.delay_id for e in await listed(client)] == ["abc"]
        far = datetime(2100, 1, 1, tzinfo=timezone.utc)
        assert await listed(client, due_until=far) == []
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("bounds", "says"),
    [
        ({"due_from": datetime(2026, 11, 29, 14, 0)}, "aware datetime"),
        ({"due_until": 1_790_000_000_000}, "datetime.datetime, not int"),
        ({"due_from": "2026-11-29T14:00Z"}, "datetime.datetime, not str"),
        ({"due_until": date(2026, 11, 29)}, "datetime.datetime, not date"),
        ({"due_from": datetime(1969, 12, 31, tzinfo=timezone.utc)}, "before 1970"),
        (
            {
                "due_from": datetime(2026, 11, 29, 14, tzinfo=timezone.utc),
                "due_until": datetime(2026, 11, 29, 13, tzinfo=timezone.utc),
            },
            "due_from is after due_until",
        ),
    ],
)
async def test_a_bad_range_is_refused_before_sending(
    bounds: dict[str, Any], says: str, client: DelayedAsyncClient, server: FakeHomeserver
) -> None:
    found = await client.delayed_events(**bounds)
    assert isinstance(found, DelayedEventsListError)
    assert found.kind is ErrorKind.INVALID
    assert says in found.message
    assert not server.requests


# -- the command line ------------------------------------------------------------------------


async def test_cli_list_since_and_until(
    client: DelayedAsyncClient,
    server: FakeHomeserver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    soon = await schedule(client, timedelta(minutes=5))
    later = await schedule(client, timedelta(hours=2))
    monkeypatch.setenv("MATRIX_HOMESERVER", server.url)
    monkeypatch.setenv("MATRIX_USER_ID", "@bot:fake")
    monkeypatch.setenv("MATRIX_ACCESS_TOKEN", server.add_user("@bot:fake"))

    async def ids(*argv: str) -> set[str]:
        code, out, err = await cli(capsys, "list", "--json", *argv)
        assert code == 0, err
        return {e["delay_id"] for e in json.loads(out)}

    in_an_hour = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat(timespec="seconds")
    assert await ids("--until", "10m") == {soon}  # a duration counts ahead for --until
    assert await ids("--since", "+1h") == {later}
    assert await ids("--since", "1h", "--until", "+1h") == {soon}  # and back for --since
    assert await ids("--until=-1m") == set()
    assert await ids("--since", "now") == {soon, later}
    assert await ids("--since", in_an_hour) == {later}
    assert await ids("--until", in_an_hour.replace("+00:00", "Z")) == {soon}
    with monkeypatch.context() as zone:  # without an offset, a time is the machine's local time
        zone.setenv("TZ", "Etc/GMT-3")  # UTC+3: read as UTC, it would be three hours later
        time.tzset()
        local = (datetime.now() + timedelta(hours=1)).isoformat(timespec="seconds")
        assert await ids("--since", local) == {later}
    time.tzset()
    before = len(server.requests)
    code, _, err = await cli(capsys, "list", "--since", "soon")
    assert code == 2
    assert "'soon' is not a time" in err
    code, _, err = await cli(capsys, "list", "--since", "+2h", "--until", "1h")
    assert code == 2
    assert "is after --until" in err
    assert len(server.requests) == before


# -- real Synapse: its older listing, bounded by the client ------------------------------------


@pytest.mark.synapse
async def test_released_synapse_listing_is_bounded_by_the_client(room: Room) -> None:
    support = await room.bot.delayed_events_support()
    assert isinstance(support, DelayedEventsSupportResponse)
    assert support.listing is Listing.MSC4140  # no filter on the server: the client bounds
    soon = await schedule_in(room, timedelta(minutes=1))
    later = await schedule_in(room, timedelta(hours=1))
    now = datetime.now(timezone.utc)
    try:
        soon_ids = {
            e.delay_id for e in await listed(room.bot, due_until=now + timedelta(minutes=5))
        }
        later_ids = {
            e.delay_id for e in await listed(room.bot, due_from=now + timedelta(minutes=5))
        }
        assert (soon_ids, later_ids) == ({soon}, {later})
    finally:
        for delay_id in (soon, later):
            await room.bot.cancel_delayed_event(delay_id)


async def schedule_in(room: Room, delay: timedelta) -> str:
    resp = await room.bot.room_send_delayed(room.room_id, "m.room.message", TEXT, delay)
    assert isinstance(resp, RoomSendDelayedResponse), resp
    return resp.delay_id
