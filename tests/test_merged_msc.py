"""The merged MSC4140 and the MSC4486 listing, which no installable server speaks yet: against
the fake homeserver (both of its revisions), and the pure negotiation decision."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from nio.responses import SyncResponse

from nio_delayed import (
    DelayedAsyncClient,
    DelayedEventError,
    DelayedEventsListError,
    DelayedEventsListResponse,
    DelayedEventsSupportResponse,
    DelayedEventStatus,
    Dialect,
    ErrorKind,
    Listing,
    RoomSendDelayedError,
    RoomSendDelayedResponse,
)
from nio_delayed._client.decision import ProbeAnswer, choose_dialect, needs_probe
from nio_delayed.cli import main
from nio_delayed.errors import classify_error
from nio_delayed.request_builders import HttpRequest
from nio_delayed.testing import FakeHomeserver
from nio_delayed.transport import HttpAnswer

from .conftest import fake_client

ROOM, OTHER_ROOM = "!room:fake", "!other:fake"
TEXT = {"msgtype": "m.text", "body": "later"}


async def schedule(
    client: DelayedAsyncClient, room: str = ROOM, event_type: str = "m.room.message"
) -> str:
    resp = await client.room_send_delayed(room, event_type, TEXT, timedelta(minutes=1))
    assert isinstance(resp, RoomSendDelayedResponse), resp
    return resp.delay_id


async def raw(
    server: FakeHomeserver, method: str, path: str, token: str | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url + path, json={}, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


@pytest.fixture
async def client(fake: FakeHomeserver) -> AsyncIterator[DelayedAsyncClient]:
    client = await fake_client(fake)
    yield client
    await client.close()


# -- the merged MSC4140 --------------------------------------------------------------------


@pytest.mark.parametrize(("revision", "without_token"), [("merged", 401), ("draft", 200)])
async def test_management_needs_a_token_in_the_merged_msc(
    revision: str, without_token: int
) -> None:
    async with FakeHomeserver(revision=revision) as server:  # type: ignore[arg-type]
        client = await fake_client(server)
        try:
            delay_id = await schedule(client)
        finally:
            await client.close()
        path = f"/_matrix/client/v1/delayed_events/{delay_id}/restart"
        assert (await raw(server, "POST", path))[0] == without_token
        token = server.add_user("@bot:fake")
        assert (await raw(server, "POST", path, token))[0] == 200


@pytest.mark.parametrize(
    ("revision", "stable", "errcode"),
    [
        ("merged", False, "ORG.MATRIX.MSC4140_MAX_DELAY_EXCEEDED"),
        ("merged", True, "M_MAX_DELAY_EXCEEDED"),
        ("draft", False, "M_MAX_DELAY_EXCEEDED"),
    ],
)
async def test_every_delay_too_large_code_gives_the_servers_maximum(
    revision: str, stable: bool, errcode: str
) -> None:
    async with FakeHomeserver(
        revision=revision,  # type: ignore[arg-type]
        stable=stable,
        unstable=not stable,
        max_delay_ms=None,  # not published: only the refusal says it
    ) as server:
        client = await fake_client(server)
        try:
            await client.delayed_events_support()
            server.max_delay_ms = 5000
            resp = await client.room_send_delayed(
                ROOM, "m.room.message", TEXT, timedelta(seconds=5, milliseconds=1)
            )
            again = await client.room_send_delayed(
                ROOM, "m.room.message", TEXT, timedelta(seconds=6)
            )
        finally:
            await client.close()
    assert isinstance(resp, RoomSendDelayedError)
    assert (resp.kind, resp.errcode, resp.max_delay_ms) == (
        ErrorKind.DELAY_TOO_LARGE,
        errcode,
        5000,
    )
    # The maximum is remembered: the second refusal is the client's, nothing was sent.
    assert isinstance(again, RoomSendDelayedError)
    assert again.http_status is None
    assert len(server.requests_to(f"/rooms/{ROOM}/delayed_event/")) == 1


@pytest.mark.parametrize(
    ("status", "answer"),
    [
        # the merged MSC: stable, then under its unstable prefix
        (400, {"errcode": "M_MAX_DELAY_EXCEEDED", "max_delay": 5000}),
        (
            400,
            {
                "errcode": "ORG.MATRIX.MSC4140_MAX_DELAY_EXCEEDED",
                "org.matrix.msc4140.max_delay": 5000,
            },
        ),
        # Synapse 1.157 and later: the maximum only in the message
        (
            400,
            {
                "errcode": "ORG.MATRIX.MSC4140_DELAY_TOO_LARGE",
                "error": "The requested delay exceeds the allowed maximum (5000ms)",
            },
        ),
        (403, {"errcode": "M_FORBIDDEN", "max_delay_ms": 5000}),
        # older Synapse: the code nested
        (
            400,
            {
                "errcode": "M_UNKNOWN",
                "org.matrix.msc4140.errcode": "M_MAX_DELAY_EXCEEDED",
                "org.matrix.msc4140.max_delay": 5000,
            },
        ),
        (400, {"errcode": "M_DELAY_TOO_LARGE", "max_delay_ms": 5000}),  # drafts
    ],
)
def test_every_revisions_delay_too_large_answer_is_read(
    status: int, answer: dict[str, Any]
) -> None:
    info = classify_error(status, json.dumps({"error": "too large", **answer}).encode())
    assert (info.kind, info.max_delay_ms) == (ErrorKind.DELAY_TOO_LARGE, 5000)


async def test_a_delay_must_be_positive(client: DelayedAsyncClient, fake: FakeHomeserver) -> None:
    for delay in (0, -1):
        resp = await client.room_send_delayed(ROOM, "m.room.message", TEXT, delay)
        assert isinstance(resp, RoomSendDelayedError)
        assert resp.kind is ErrorKind.INVALID
    assert not fake.requests_to("/delayed_event/m.room.message/")
    token = fake.add_user("@bot:fake")
    status, answer = await raw(
        fake, "PUT", "/_matrix/client/v3/rooms/!r:fake/delayed_event/m.room.message/t1", token
    )
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")  # no "delay" at all


async def test_only_the_sender_sees_the_delay_id_of_a_fired_event(
    client: DelayedAsyncClient, fake: FakeHomeserver
) -> None:
    delay_id = await schedule(client)
    fake.fire(delay_id)
    sender, other = fake.add_user("@bot:fake"), fake.add_user("@other:fake")

    async def unsigned_seen_by(token: str) -> dict[str, Any]:
        _, answer = await raw(fake, "GET", "/_matrix/client/v3/sync", token)
        [event] = answer["rooms"]["join"][ROOM]["timeline"]["events"]
        return dict(event.get("unsigned", {}))

    assert await unsigned_seen_by(sender) == {
        "org.matrix.msc4140.delay_id": delay_id,
        "delay_id": delay_id,
    }
    assert await unsigned_seen_by(other) == {}


async def test_restart_after_sent_is_a_conflict_and_repeats_are_fine(
    client: DelayedAsyncClient, fake: FakeHomeserver
) -> None:
    delay_id = await schedule(client)
    fake.fire(delay_id)
    assert not isinstance(await client.send_delayed_event_now(delay_id), DelayedEventError)
    restarted = await client.restart_delayed_event(delay_id)
    assert isinstance(restarted, DelayedEventError)
    assert (restarted.kind, restarted.http_status) == (ErrorKind.CONFLICT, 409)


async def test_the_capability_is_present_without_limits() -> None:
    async with FakeHomeserver(max_delay_ms=None, max_scheduled=None) as server:
        token = server.add_user("@bot:fake")
        _, answer = await raw(server, "GET", "/_matrix/client/v3/capabilities", token)
    assert answer["capabilities"]["m.delayed_events"] == {}


# -- listing: MSC4486, or the older MSC4140 listing ----------------------------------------


@pytest.mark.parametrize(
    ("options", "listing", "path"),
    [
        ({}, Listing.MSC4486_UNSTABLE, "/_matrix/client/unstable/org.matrix.msc4486/"),
        ({"msc4486_stable": True}, Listing.MSC4486, "/_matrix/client/v1/delayed_events"),
        (
            {"msc4486": False, "revision": "draft"},
            Listing.MSC4140,
            "/_matrix/client/v1/delayed_events",
        ),
    ],
)
async def test_listing_is_negotiated_on_its_own_flag(
    options: dict[str, Any], listing: Listing, path: str
) -> None:
    async with FakeHomeserver(**options) as server:
        client = await fake_client(server)
        try:
            support = await client.delayed_events_support()
            delay_id = await schedule(client)
            found = await client.delayed_events()
        finally:
            await client.close()
    assert isinstance(support, DelayedEventsSupportResponse)
    assert support.listing is listing
    assert isinstance(found, DelayedEventsListResponse)
    assert [e.delay_id for e in found.delayed_events] == [delay_id]
    listed = [r.path for r in server.requests if r.method == "GET" and "delayed_events" in r.path]
    assert listed[0].startswith(path)


async def test_a_merged_server_without_msc4486_lists_nothing() -> None:
    async with FakeHomeserver(msc4486=False) as server:
        client = await fake_client(server)
        try:
            await schedule(client)
            found = await client.delayed_events()
        finally:
            await client.close()
    assert isinstance(found, DelayedEventsListError)
    assert found.kind is ErrorKind.UNSUPPORTED
    assert "MSC4486" in found.message


@pytest.fixture(params=["msc4486", "msc4140"])
async def listing_server(request: pytest.FixtureRequest) -> AsyncIterator[FakeHomeserver]:
    """A server whose listing filters (MSC4486), or one whose listing does not (draft)."""
    options: dict[str, Any] = (
        {} if request.param == "msc4486" else {"msc4486": False, "revision": "draft"}
    )
    async with FakeHomeserver(**options) as server:
        yield server


async def test_the_listing_filters_by_status_room_and_type(
    listing_server: FakeHomeserver,
) -> None:
    server = listing_server
    client = await fake_client(server)
    try:
        failed = await schedule(client)
        server.fail(failed)
        cancelled = await schedule(client)
        await client.cancel_delayed_event(cancelled)
        elsewhere = await schedule(client, OTHER_ROOM)
        topic = await schedule(client, event_type="m.room.topic")
        plain = await schedule(client)

        async def ids(**filters: Any) -> set[str]:
            found = await client.delayed_events(**filters)
            assert isinstance(found, DelayedEventsListResponse), found
            return {e.delay_id for e in found.delayed_events}

        assert await ids(status=DelayedEventStatus.FAILED) == {failed}
        assert await ids(status="cancelled") == {cancelled}
        assert await ids(status="scheduled") == {elsewhere, topic, plain}
        assert await ids(room_id=OTHER_ROOM) == {elsewhere}
        assert await ids(event_type="m.room.topic", status="scheduled") == {topic}
        assert await ids() == {failed, cancelled, elsewhere, topic, plain}
    finally:
        await client.close()
    if server.msc4486:  # the server filtered: the client asked it to
        assert server.requests_to("status=failed")
        assert server.requests_to("room_id=%21other%3Afake") or server.requests_to(
            f"room_id={OTHER_ROOM}"
        )


async def test_filtered_listing_follows_pagination(
    client: DelayedAsyncClient, fake: FakeHomeserver
) -> None:
    wanted = {await schedule(client, OTHER_ROOM) for _ in range(12)}
    for _ in range(5):
        await schedule(client)
    found = await client.delayed_events(room_id=OTHER_ROOM)
    assert isinstance(found, DelayedEventsListResponse)
    assert {e.delay_id for e in found.delayed_events} == wanted
    assert len(fake.requests_to("/delayed_events?")) == 2  # 12 matches: two pages of 10


@pytest.mark.parametrize(
    "filters",
    [{"status": "finalised"}, {"status": 3}, {"room_id": "#alias:fake"}, {"event_type": ""}],
)
async def test_bad_filters_are_refused_before_sending(
    client: DelayedAsyncClient, fake: FakeHomeserver, filters: dict[str, Any]
) -> None:
    found = await client.delayed_events(**filters)
    assert isinstance(found, DelayedEventsListError)
    assert found.kind is ErrorKind.INVALID
    assert not fake.requests


async def test_msc4486_on_the_fake_orders_and_bounds_by_send_time(fake: FakeHomeserver) -> None:
    client = await fake_client(fake)
    try:
        for seconds in (3, 1, 2):
            delay = timedelta(seconds=seconds)
            resp = await client.room_send_delayed(ROOM, "m.room.message", TEXT, delay)
            assert isinstance(resp, RoomSendDelayedResponse)
    finally:
        await client.close()
    token = fake.add_user("@bot:fake")
    base = "/_matrix/client/unstable/org.matrix.msc4486/delayed_events"

    async def delays(query: str) -> list[int]:
        status, answer = await raw(fake, "GET", f"{base}?{query}", token)
        assert status == 200, answer
        return [e["delay_ms"] for e in answer["delayed_events"]]

    assert await delays("") == [1000, 2000, 3000]
    assert await delays("dir=b") == [3000, 2000, 1000]
    first_due = min(d["delayed_since_ts"] + d["delay_ms"] for d in fake.scheduled())
    assert await delays(f"from_ts={first_due + 1}") == [2000, 3000]
    assert await delays(f"to_ts={first_due + 1}") == [1000]
    for bad in ("status=finalised", "dir=x", "from_ts=soon"):
        status, answer = await raw(fake, "GET", f"{base}?{bad}", token)
        assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")


# -- negotiation: a pure decision ------------------------------------------------------------


def versions(*flags: str) -> dict[str, Any]:
    return {"versions": ["v1.12"], "unstable_features": dict.fromkeys(flags, True)}


def capability(name: str = "org.matrix.msc4140.delayed_events", **limits: int) -> dict[str, Any]:
    return {"capabilities": {name: limits}}


def test_the_stable_flag_or_capability_means_the_stable_dialect_without_a_probe() -> None:
    for advertised, caps in [
        (versions("org.matrix.msc4140.stable"), None),
        (versions("org.matrix.msc4140"), capability("m.delayed_events", max_delay_ms=9)),
    ]:
        assert not needs_probe(advertised, caps)
        support = choose_dialect(advertised, caps, None)
        assert (support.dialect, support.listing) == (Dialect.STABLE, Listing.MSC4140)


@pytest.mark.parametrize(
    ("probe", "dialect"),
    [
        (ProbeAnswer(400, "M_NOT_JSON"), Dialect.UNSTABLE),
        (ProbeAnswer(403, "M_FORBIDDEN"), Dialect.UNSTABLE),
        (ProbeAnswer(404, "M_UNRECOGNIZED"), Dialect.LEGACY),
        (ProbeAnswer(405), Dialect.LEGACY),
        (ProbeAnswer(404), Dialect.LEGACY),  # a bare 404 is a proxy's, not the endpoint's
    ],
)
def test_only_the_probe_tells_legacy_from_unstable(probe: ProbeAnswer, dialect: Dialect) -> None:
    advertised = versions("org.matrix.msc4140")
    caps = capability(max_delay_ms=1000, max_scheduled=5)
    assert needs_probe(advertised, caps)
    support = choose_dialect(advertised, caps, probe)
    assert (support.supported, support.dialect) == (True, dialect)
    assert (support.max_delay_ms, support.max_scheduled) == (1000, 5)
    with pytest.raises(ValueError, match="probe"):
        choose_dialect(advertised, caps, None)  # never a guess


@pytest.mark.parametrize(
    ("flags", "listing"),
    [
        (("org.matrix.msc4486",), Listing.MSC4486_UNSTABLE),
        (("org.matrix.msc4486", "org.matrix.msc4486.stable"), Listing.MSC4486),
        ((), Listing.MSC4140),
    ],
)
def test_listing_follows_the_msc4486_flags(flags: tuple[str, ...], listing: Listing) -> None:
    support = choose_dialect(versions("org.matrix.msc4140.stable", *flags), None, None)
    assert support.listing is listing


@pytest.mark.parametrize(
    ("advertised", "caps", "reason"),
    [
        (versions(), None, "does not advertise"),
        (versions("org.matrix.msc4486"), None, "does not advertise"),
        (versions("org.matrix.msc4140"), capability(max_delay_ms=0), "turned off"),
        ({"unstable_features": "yes"}, "nonsense", "does not advertise"),
    ],
)
def test_unsupported_servers_get_a_reason_and_no_probe(
    advertised: object, caps: object, reason: str
) -> None:
    assert not needs_probe(advertised, caps)
    support = choose_dialect(advertised, caps, None)
    assert (support.supported, support.dialect, support.listing) == (False, None, None)
    assert reason in support.reason


# -- the client's seams: transport, sync observers, current state ---------------------------


class ScriptedTransport:
    """A transport that answers from a table, as tests replace httpx's."""

    def __init__(self, answers: dict[str, tuple[int, bytes]]) -> None:
        self.answers = answers
        self.sent: list[str] = []
        self.closed = False

    async def send(self, request: HttpRequest, timeout: float) -> HttpAnswer:
        self.sent.append(request.path)
        for prefix, (status, body) in self.answers.items():
            if request.path.startswith(prefix):
                return HttpAnswer(status, body)
        return HttpAnswer(404, b'{"errcode": "M_UNRECOGNIZED"}')

    async def close(self) -> None:
        self.closed = True


async def test_the_http_session_can_be_replaced() -> None:
    transport = ScriptedTransport(
        {
            "/_matrix/client/versions": (
                200,
                b'{"unstable_features": {"org.matrix.msc4140.stable": true}}',
            ),
            "/_matrix/client/v3/capabilities": (200, b'{"capabilities": {}}'),
            "/_matrix/client/v1/delayed_events/abc/cancel": (200, b"{}"),
        }
    )
    client = DelayedAsyncClient("https://hs.invalid", "@bot:hs.invalid")
    client.delayed_events_transport = transport
    resp = await client.cancel_delayed_event("abc")
    await client.close()
    assert not isinstance(resp, DelayedEventError), resp
    assert transport.sent[-1] == "/_matrix/client/v1/delayed_events/abc/cancel"
    assert transport.closed


async def test_sync_observers_see_every_sync_until_removed(client: DelayedAsyncClient) -> None:
    seen: list[str] = []
    observer: Callable[[SyncResponse], None] = lambda response: seen.append(response.next_batch)  # noqa: E731
    client.add_sync_observer(observer)
    sync = SyncResponse.from_dict({"next_batch": "s1", "rooms": {}})
    assert isinstance(sync, SyncResponse)
    await client.receive_response(sync)
    client.remove_sync_observer(observer)
    client.remove_sync_observer(observer)  # again: no error
    await client.receive_response(sync)
    assert seen == ["s1"]


async def test_current_state_event_is_whole_or_a_typed_error(
    client: DelayedAsyncClient, fake: FakeHomeserver
) -> None:
    missing = await client.current_state_event(ROOM, "m.room.topic", "")
    assert isinstance(missing, DelayedEventError)
    assert missing.kind is ErrorKind.NOT_FOUND
    await client.send_event_bounded(ROOM, "m.room.topic", {"topic": "t"}, "")
    current = await client.current_state_event(ROOM, "m.room.topic", "")
    assert isinstance(current, dict)
    assert (current["sender"], current["content"]) == ("@bot:fake", {"topic": "t"})
    before = len(fake.requests)
    bad = await client.current_state_event("not-a-room", "m.room.topic", "")
    assert isinstance(bad, DelayedEventError)
    assert bad.kind is ErrorKind.INVALID
    assert len(fake.requests) == before


async def test_concurrent_listings_share_one_negotiation(
    client: DelayedAsyncClient, fake: FakeHomeserver
) -> None:
    await asyncio.gather(*(client.delayed_events() for _ in range(5)))
    assert len(fake.requests_to("/versions")) == 1


# -- the command line ------------------------------------------------------------------------


async def test_cli_list_filters(
    fake: FakeHomeserver,
    client: DelayedAsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    failed = await schedule(client)
    fake.fail(failed)
    elsewhere = await schedule(client, OTHER_ROOM, "m.room.topic")
    await schedule(client)
    monkeypatch.setenv("MATRIX_HOMESERVER", fake.url)
    monkeypatch.setenv("MATRIX_USER_ID", "@bot:fake")
    monkeypatch.setenv("MATRIX_ACCESS_TOKEN", fake.add_user("@bot:fake"))

    async def listed(*argv: str) -> list[str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["list", "--json", *argv])
        out = capsys.readouterr().out
        assert code == 0, out
        return [e["delay_id"] for e in json.loads(out)]

    capsys.readouterr()
    assert await asyncio.to_thread(main, ["support", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["listing"] == "msc4486-unstable"
    assert await listed("--failed") == [failed]
    assert await listed("--room", OTHER_ROOM, "--type", "m.room.topic") == [elsewhere]
    assert await listed("--status", "sent") == []
    assert len(await listed()) == 3


async def test_a_closed_client_opens_a_new_session_and_keeps_what_it_learned(
    client: DelayedAsyncClient, fake: FakeHomeserver
) -> None:
    await schedule(client)
    await client.close()
    found = await client.delayed_events()
    assert isinstance(found, DelayedEventsListResponse)
    assert len(found.delayed_events) == 1
    assert len(fake.requests_to("/versions")) == 1
