"""Client behaviour with the HTTP layer mocked: negotiation, safety, fallbacks, bounded retries."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
from aioresponses import aioresponses
from nio.responses import SyncResponse
from nio.rooms import MatrixRoom
from yarl import URL

from nio_delayed import (
    DelayedAsyncClient,
    DelayedEventError,
    DelayedEventsListError,
    DelayedEventsListResponse,
    DelayedEventsSupportError,
    DelayedEventsSupportResponse,
    Dialect,
    ErrorKind,
    GetDelayedEventResponse,
    RequestPolicy,
    RoomPutStateDelayedError,
    RoomSendDelayedError,
    RoomSendDelayedResponse,
    UpdateDelayedEventError,
    UpdateDelayedEventResponse,
)

HS = "https://hs.example"
ROOM = "!room:hs.example"
TOKEN = "secret-access-token"
DELAY_ID = "syd_abcdefghijklmnopqrst"
UNSTABLE = f"{HS}/_matrix/client/unstable/org.matrix.msc4140"
VERSIONS = f"{HS}/_matrix/client/versions"
CAPABILITIES = f"{HS}/_matrix/client/v3/capabilities"
FAST = RequestPolicy(
    timeout=timedelta(seconds=1),
    max_attempts=3,
    backoff_initial=timedelta(milliseconds=10),
    backoff_max=timedelta(milliseconds=20),
)


@pytest.fixture
async def client() -> AsyncIterator[DelayedAsyncClient]:
    client = DelayedAsyncClient(HS, "@bot:hs.example")
    client.restore_login("@bot:hs.example", "DEV", TOKEN)
    client.delayed_events_policy = FAST
    yield client
    await client.close()


@pytest.fixture
def http() -> Iterator[aioresponses]:
    with aioresponses() as mocked:
        yield mocked


def advertise(
    http: aioresponses, features: dict[str, bool] | None = None, capability: Any = None
) -> None:
    http.get(
        VERSIONS,
        payload={"versions": ["v1.11"], "unstable_features": features or {}},
        repeat=True,
    )
    capabilities = {} if capability is None else {"org.matrix.msc4140.delayed_events": capability}
    http.get(CAPABILITIES, payload={"capabilities": capabilities}, repeat=True)
    # The client has not synced: it asks whether a room is encrypted before sending a message.
    http.get(
        re.compile(r".*/state/m\.room\.encryption/\?format=event$"),
        status=404,
        payload={"errcode": "M_NOT_FOUND", "error": "Event not found."},
        repeat=True,
    )


def legacy_server(http: aioresponses, capability: Any = None) -> None:
    """A Synapse-like server: the flag, and no merged-MSC scheduling endpoint."""
    advertise(http, {"org.matrix.msc4140": True}, capability)
    http.put(
        re.compile(rf"^{re.escape(UNSTABLE)}/rooms/.*/delayed_event/"),
        status=404,
        payload={"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"},
    )


def calls(http: aioresponses, method: str | None = None) -> list[tuple[str, URL]]:
    return [key for key, reqs in http.requests.items() for _ in reqs if method in (None, key[0])]


def events_sent(http: aioresponses) -> list[URL]:
    """PUTs that carry an event (the support probe carries none)."""
    return [url for _, url in calls(http, "PUT") if "nio-delayed-probe" not in str(url)]


def sent(http: aioresponses, method: str, url: str) -> list[Any]:
    return http.requests.get((method, URL(url)), [])


# -- safety ----------------------------------------------------------------------------------


async def test_server_that_does_not_advertise_gets_no_delayed_request(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    advertise(http, {"org.matrix.msc4140": False})
    resp = await client.room_send_delayed(
        ROOM, "m.room.message", {"body": "x"}, timedelta(seconds=1)
    )
    assert isinstance(resp, RoomSendDelayedError)
    assert resp.kind is ErrorKind.UNSUPPORTED
    assert "does not advertise" in resp.message
    state = await client.room_put_state_delayed(ROOM, "m.room.topic", {}, timedelta(seconds=1))
    assert isinstance(state, RoomPutStateDelayedError)
    assert state.kind is ErrorKind.UNSUPPORTED
    assert {method for method, _ in calls(http)} == {"GET"}  # nothing was PUT


async def test_capability_with_max_delay_zero_is_unsupported(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    advertise(http, {"org.matrix.msc4140": True}, {"max_delay_ms": 0})
    support = await client.delayed_events_support()
    assert isinstance(support, DelayedEventsSupportResponse)
    assert not support.supported
    assert "turned off" in support.reason
    resp = await client.room_send_delayed(ROOM, "m.room.message", {}, timedelta(seconds=1))
    assert resp.kind is ErrorKind.UNSUPPORTED  # type: ignore[union-attr]
    assert not events_sent(http)


async def test_answer_with_event_id_and_no_delay_id_means_it_was_sent_at_once(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    legacy_server(http)
    http.put(re.compile(r".*/send/m\.room\.message/.*"), payload={"event_id": "$sent"})
    resp = await client.room_send_delayed(
        ROOM, "m.room.message", {"body": "x"}, timedelta(seconds=1)
    )
    assert isinstance(resp, RoomSendDelayedError)
    assert resp.kind is ErrorKind.SENT_IMMEDIATELY
    assert "$sent" in resp.message


async def test_answer_without_delay_id_is_an_error(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    legacy_server(http)
    http.put(re.compile(r".*/send/.*"), payload={})
    resp = await client.room_send_delayed(ROOM, "m.room.message", {}, timedelta(seconds=1))
    assert resp.kind is ErrorKind.SERVER_ERROR  # type: ignore[union-attr]


async def test_non_json_success_body_is_an_error(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    legacy_server(http)
    http.put(re.compile(r".*/send/.*"), body="<html>ok</html>", content_type="text/html")
    resp = await client.room_send_delayed(ROOM, "m.room.message", {}, timedelta(seconds=1))
    assert isinstance(resp, RoomSendDelayedError)
    assert resp.kind is ErrorKind.SERVER_ERROR
    assert resp.http_status == 200


async def test_encrypted_room_without_e2e_support_is_refused_and_nothing_is_sent(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    legacy_server(http)
    client.rooms[ROOM] = MatrixRoom(ROOM, client.user_id, encrypted=True)
    assert client.olm is None  # no store: this client cannot encrypt
    resp = await client.room_send_delayed(
        ROOM, "m.room.message", {"body": "secret"}, timedelta(seconds=1)
    )
    assert isinstance(resp, RoomSendDelayedError)
    assert resp.kind is ErrorKind.UNSUPPORTED
    assert "nio-delayed[e2e]" in resp.message
    assert not events_sent(http)


async def test_a_room_the_client_has_not_synced_is_checked_for_encryption_first(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    http.get(  # before the default answer (not encrypted): the first match answers
        re.compile(r".*secret.*/state/m\.room\.encryption/\?format=event$"),
        payload={"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
    )
    legacy_server(http)
    resp = await client.room_send_delayed(
        "!secret:hs.example", "m.room.message", {"body": "x"}, timedelta(milliseconds=1)
    )
    assert isinstance(resp, RoomSendDelayedError)
    assert resp.kind is ErrorKind.UNSUPPORTED
    assert not events_sent(http)
    # Encryption stays on once on: the answer is kept, and asked no more.
    again = await client.room_send_delayed(
        "!secret:hs.example", "m.room.message", {"body": "x"}, timedelta(milliseconds=1)
    )
    assert isinstance(again, RoomSendDelayedError)
    assert len([url for _, url in calls(http, "GET") if "m.room.encryption" in str(url)]) == 1


async def test_an_answer_about_encryption_that_is_not_an_event_sends_nothing(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    http.get(re.compile(r".*odd.*/state/.*"), payload={"not": "an event"})
    legacy_server(http)
    resp = await client.room_send_delayed(
        "!odd:hs.example", "m.room.message", {"body": "x"}, timedelta(milliseconds=1)
    )
    assert isinstance(resp, RoomSendDelayedError)
    assert resp.kind is ErrorKind.SERVER_ERROR
    assert "encrypted" in resp.message
    assert not events_sent(http)


async def test_invalid_input_is_refused_without_any_request(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    for resp in [
        await client.room_send_delayed("#alias:x", "m.room.message", {}, timedelta(seconds=1)),
        await client.room_send_delayed(ROOM, "", {}, timedelta(seconds=1)),
        await client.room_send_delayed(ROOM, "m.room.message", {"x": {1}}, timedelta(seconds=1)),  # type: ignore[dict-item]
        await client.room_send_delayed(ROOM, "m.room.message", {}, timedelta(seconds=1), tx_id=""),
        await client.room_put_state_delayed(
            ROOM, "m.room.topic", {}, timedelta(seconds=1), state_key=None
        ),  # type: ignore[arg-type]
        await client.restart_delayed_event(""),
        await client.get_delayed_event("a b"),
        await client.room_send_delayed(ROOM, "m.room message", {}, timedelta(seconds=1)),
        await client.room_send_delayed(
            ROOM, "m.room.message", {"big": "x" * 70_000}, timedelta(seconds=1)
        ),
        await client.room_put_state_delayed(
            ROOM, "m.room.topic", {}, timedelta(seconds=1), state_key="a\nb"
        ),
        await client.room_send_delayed(ROOM, "m.room.message", {}, timedelta(hours=-1)),
    ]:
        assert resp.kind is ErrorKind.INVALID, resp  # type: ignore[union-attr]
    assert not calls(http)


async def test_delay_above_known_maximum_is_refused_before_sending(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    legacy_server(http, {"max_delay_ms": 60_000, "max_scheduled": 10})
    resp = await client.room_send_delayed(
        ROOM, "m.room.message", {}, timedelta(seconds=60, milliseconds=1)
    )
    assert isinstance(resp, RoomSendDelayedError)
    assert resp.kind is ErrorKind.DELAY_TOO_LARGE
    assert resp.max_delay_ms == 60_000
    assert not [c for c in calls(http, "PUT") if "/send/" in str(c[1])]


# -- negotiation -----------------------------------------------------------------------------


async def test_support_is_cached_until_refreshed(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    legacy_server(http, {"max_delay_ms": 1000})
    first = await client.delayed_events_support()
    again = await client.delayed_events_support()
    assert first is again
    assert isinstance(first, DelayedEventsSupportResponse)
    assert (first.dialect, first.max_delay_ms, first.max_scheduled) == (Dialect.LEGACY, 1000, None)
    assert len(sent(http, "GET", VERSIONS)) == 1
    http.put(
        re.compile(rf"^{re.escape(UNSTABLE)}/rooms/.*/delayed_event/"),
        status=404,
        payload={"errcode": "M_UNRECOGNIZED"},
    )
    await client.delayed_events_support(refresh=True)
    assert len(sent(http, "GET", VERSIONS)) == 2


async def test_concurrent_first_calls_negotiate_once(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    legacy_server(http)
    results = await asyncio.gather(*(client.delayed_events_support() for _ in range(5)))
    assert all(r is results[0] for r in results)
    assert len(sent(http, "GET", VERSIONS)) == 1


async def test_unstable_flag_with_scheduling_endpoint_chooses_merged_msc(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    advertise(http, {"org.matrix.msc4140": True})
    probe = re.compile(rf"^{re.escape(UNSTABLE)}/rooms/.*/delayed_event/m\.room\.message/nio-")
    http.put(probe, status=400, payload={"errcode": "M_BAD_JSON", "error": "delay missing"})
    http.put(
        re.compile(rf"^{re.escape(UNSTABLE)}/rooms/.*/delayed_event/m\.room\.message/t1$"),
        payload={"delay_id": DELAY_ID},
    )
    support = await client.delayed_events_support()
    assert isinstance(support, DelayedEventsSupportResponse)
    assert support.dialect is Dialect.UNSTABLE
    resp = await client.room_send_delayed(
        ROOM, "m.room.message", {"b": 1}, timedelta(seconds=5), tx_id="t1"
    )
    assert isinstance(resp, RoomSendDelayedResponse), resp
    assert resp.delay_id == DELAY_ID


async def test_stable_capability_alone_chooses_stable(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    http.get(VERSIONS, payload={"versions": ["v1.18"]})
    http.get(CAPABILITIES, payload={"capabilities": {"m.delayed_events": {"max_delay_ms": 9}}})
    support = await client.delayed_events_support()
    assert isinstance(support, DelayedEventsSupportResponse)
    assert (support.dialect, support.max_delay_ms) == (Dialect.STABLE, 9)
    assert not events_sent(http)  # no probe needed


async def test_probe_failure_is_an_error_and_not_cached(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    advertise(http, {"org.matrix.msc4140": True})
    http.put(re.compile(r".*/delayed_event/.*"), status=502, body="bad gateway", repeat=True)
    support = await client.delayed_events_support()
    assert isinstance(support, DelayedEventsSupportError)
    assert support.kind is ErrorKind.SERVER_ERROR
    resp = await client.room_send_delayed(ROOM, "m.room.message", {}, timedelta(seconds=1))
    assert resp.kind is ErrorKind.SERVER_ERROR  # type: ignore[union-attr]
    assert "could not learn" in resp.message  # type: ignore[union-attr]
    assert len(sent(http, "GET", VERSIONS)) == 2  # asked again, not cached


async def test_unreachable_server_is_a_network_error_not_cached() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = DelayedAsyncClient(f"http://127.0.0.1:{port}", "@bot:x")
    client.delayed_events_policy = FAST
    try:
        first = await client.delayed_events_support()
        assert isinstance(first, DelayedEventsSupportError)
        assert first.kind is ErrorKind.NETWORK
        assert "could not connect" in first.message
        resp = await client.restart_delayed_event(DELAY_ID)
        assert isinstance(resp, UpdateDelayedEventError)
        assert resp.kind is ErrorKind.NETWORK
    finally:
        await client.close()


# -- management ------------------------------------------------------------------------------


async def test_path_form_falls_back_to_body_form_once_and_remembers(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    legacy_server(http)
    path_form = f"{UNSTABLE}/delayed_events/{DELAY_ID}/restart"
    body_form = f"{UNSTABLE}/delayed_events/{DELAY_ID}"
    http.post(path_form, status=404, payload={"errcode": "M_UNRECOGNIZED"})
    http.post(body_form, payload={}, repeat=True)
    for _ in range(3):
        resp = await client.restart_delayed_event(DELAY_ID)
        assert isinstance(resp, UpdateDelayedEventResponse), resp
    assert len(sent(http, "POST", path_form)) == 1
    bodies = [r.kwargs["data"] for r in sent(http, "POST", body_form)]
    assert bodies == [b'{"action":"restart"}'] * 3


async def test_not_found_does_not_fall_back(client: DelayedAsyncClient, http: aioresponses) -> None:
    legacy_server(http)
    http.post(
        f"{UNSTABLE}/delayed_events/{DELAY_ID}/cancel",
        status=404,
        payload={"errcode": "M_NOT_FOUND", "error": "Delayed event not found"},
    )
    resp = await client.cancel_delayed_event(DELAY_ID)
    assert isinstance(resp, UpdateDelayedEventError)
    assert resp.kind is ErrorKind.NOT_FOUND
    assert len(calls(http, "POST")) == 1


async def test_access_token_is_sent_as_header_never_in_the_url(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    legacy_server(http)
    http.post(f"{UNSTABLE}/delayed_events/{DELAY_ID}/send", payload={})
    await client.send_delayed_event_now(DELAY_ID)
    for (_, url), requests in http.requests.items():
        assert TOKEN not in str(url)
        for request in requests:
            assert request.kwargs["headers"]["Authorization"] == f"Bearer {TOKEN}"


# -- bounded retries -------------------------------------------------------------------------


async def test_short_rate_limit_hint_is_waited_then_retried(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    legacy_server(http)
    url = f"{UNSTABLE}/delayed_events/{DELAY_ID}/restart"
    http.post(url, status=429, payload={"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 50})
    http.post(url, payload={})
    started = time.monotonic()
    resp = await client.restart_delayed_event(DELAY_ID)
    assert isinstance(resp, UpdateDelayedEventResponse)
    assert time.monotonic() - started >= 0.05
    assert len(sent(http, "POST", url)) == 2


async def test_long_rate_limit_hint_is_returned_at_once(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    legacy_server(http)
    http.put(
        re.compile(r".*/send/.*"),
        status=429,
        payload={"errcode": "M_LIMIT_EXCEEDED", "error": "too many delayed events"},
        headers={"Retry-After": "1200"},
    )
    started = time.monotonic()
    resp = await client.room_send_delayed(ROOM, "m.room.message", {}, timedelta(seconds=1))
    assert isinstance(resp, RoomSendDelayedError)
    assert (resp.kind, resp.retry_after_ms) == (ErrorKind.RATE_LIMITED, 1_200_000)
    assert time.monotonic() - started < 5  # never sat in a 20-minute wait
    assert len(calls(http, "PUT")) == 2  # the probe and one attempt


async def test_persistent_server_errors_stop_after_max_attempts(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    legacy_server(http)
    url = f"{UNSTABLE}/delayed_events/{DELAY_ID}/restart"
    http.post(url, status=503, body="unavailable", repeat=True)
    resp = await client.restart_delayed_event(DELAY_ID)
    assert isinstance(resp, UpdateDelayedEventError)
    assert (resp.kind, resp.http_status) == (ErrorKind.SERVER_ERROR, 503)
    assert len(sent(http, "POST", url)) == FAST.max_attempts


async def test_timeouts_retry_messages_with_the_same_transaction_id(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    legacy_server(http)
    http.put(re.compile(r".*/send/.*"), exception=asyncio.TimeoutError(), repeat=True)
    resp = await client.room_send_delayed(
        ROOM, "m.room.message", {}, timedelta(seconds=1), tx_id="txn-1"
    )
    assert isinstance(resp, RoomSendDelayedError)
    assert resp.kind is ErrorKind.NETWORK
    urls = [url for method, url in calls(http, "PUT") if "/send/" in str(url)]
    assert len(urls) == FAST.max_attempts
    assert len(set(urls)) == 1  # same txn id: the server answers a replay with the same delay_id


async def test_legacy_state_event_is_never_retried_after_an_unanswered_attempt(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    legacy_server(http)
    http.put(re.compile(r".*/state/.*"), exception=asyncio.TimeoutError(), repeat=True)
    resp = await client.room_put_state_delayed(ROOM, "m.room.topic", {}, timedelta(seconds=1))
    assert isinstance(resp, RoomPutStateDelayedError)
    assert resp.kind is ErrorKind.NETWORK
    # /state has no transaction id: a second attempt could schedule a second event.
    assert len([u for m, u in calls(http, "PUT") if "/state/" in str(u)]) == 1


# -- reading ---------------------------------------------------------------------------------


async def test_lookup_falls_back_to_the_listing_on_servers_without_it(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    legacy_server(http)
    lookup = f"{UNSTABLE}/delayed_events/{DELAY_ID}"
    http.get(lookup, status=405, payload={"errcode": "M_UNRECOGNIZED"})
    item = {
        "delay_id": DELAY_ID,
        "room_id": ROOM,
        "type": "m.room.message",
        "delay": 5000,
        "running_since": 1,
        "content": {},
    }
    http.get(f"{UNSTABLE}/delayed_events", payload={"delayed_events": [item]}, repeat=True)
    for _ in range(2):
        found = await client.get_delayed_event(DELAY_ID)
        assert isinstance(found, GetDelayedEventResponse), found
        assert found.delayed_event.delay_ms == 5000
    missing = await client.get_delayed_event("syd_other")
    assert missing.kind is ErrorKind.NOT_FOUND  # type: ignore[union-attr]
    assert len(sent(http, "GET", lookup)) == 1  # remembered: no second lookup attempt


async def test_listing_follows_every_page(client: DelayedAsyncClient, http: aioresponses) -> None:
    legacy_server(http)

    def item(n: int) -> dict[str, Any]:
        return {"delay_id": f"d{n}", "room_id": ROOM, "type": "t", "delay": 1, "content": {}}

    base = f"{UNSTABLE}/delayed_events"
    http.get(base, payload={"delayed_events": [item(1), item(2)], "next_batch": "p2"})
    http.get(f"{base}?from=p2", payload={"delayed_events": [item(3)], "next_batch": "p3"})
    http.get(f"{base}?from=p3", payload={"delayed_events": []})
    listing = await client.delayed_events()
    assert isinstance(listing, DelayedEventsListResponse)
    assert [e.delay_id for e in listing.delayed_events] == ["d1", "d2", "d3"]


async def test_listing_that_repeats_a_token_is_an_error(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    legacy_server(http)
    base = f"{UNSTABLE}/delayed_events"
    http.get(base, payload={"delayed_events": [], "next_batch": "same"})
    http.get(f"{base}?from=same", payload={"delayed_events": [], "next_batch": "same"}, repeat=True)
    listing = await client.delayed_events()
    assert isinstance(listing, DelayedEventsListError)
    assert "repeats" in listing.message


async def test_malformed_listing_is_a_server_error(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    legacy_server(http)
    http.get(f"{UNSTABLE}/delayed_events", payload={"delayed_events": [{"delay_id": "x"}]})
    listing = await client.delayed_events()
    assert isinstance(listing, DelayedEventsListError)
    assert listing.kind is ErrorKind.SERVER_ERROR
    assert "malformed" in listing.message


def test_error_text_says_kind_status_and_hints() -> None:
    error = UpdateDelayedEventError(
        "slow down", "M_LIMIT_EXCEEDED", 850, kind=ErrorKind.RATE_LIMITED, http_status=429
    )
    assert str(error) == (
        "UpdateDelayedEventError [rate_limited] 429 M_LIMIT_EXCEEDED: slow down "
        "(retry after 850 ms)"
    )
    assert error.errcode == "M_LIMIT_EXCEEDED"


async def test_tls_verification_stays_on_unless_turned_off(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    legacy_server(http)
    http.post(f"{UNSTABLE}/delayed_events/{DELAY_ID}/restart", payload={}, repeat=True)
    await client.restart_delayed_event(DELAY_ID)
    client.ssl = False  # the caller's explicit choice, as nio offers it
    await client.restart_delayed_event(DELAY_ID)
    [on, off] = sent(http, "POST", f"{UNSTABLE}/delayed_events/{DELAY_ID}/restart")
    assert (on.kwargs["ssl"], off.kwargs["ssl"]) == (True, False)


async def test_current_state_event_is_the_whole_event_or_a_typed_error(
    client: DelayedAsyncClient, http: aioresponses
) -> None:
    topic = {"type": "m.room.topic", "state_key": "", "sender": "@other:hs.example"}
    http.get(re.compile(r".*/state/m\.room\.topic/\?format=event$"), payload=topic)
    http.get(re.compile(r".*/state/m\.room\.name/\?format=event$"), status=404, payload={})
    assert await client.current_state_event(ROOM, "m.room.topic", "") == topic
    missing = await client.current_state_event(ROOM, "m.room.name", "")
    assert isinstance(missing, DelayedEventError)
    assert missing.kind is ErrorKind.NOT_FOUND
    invalid = await client.current_state_event("#alias:x", "m.room.topic", "")
    assert isinstance(invalid, DelayedEventError)
    assert invalid.kind is ErrorKind.INVALID
    assert len(calls(http, "GET")) == 2


async def test_sync_observers_see_every_sync_until_removed(client: DelayedAsyncClient) -> None:
    seen: list[SyncResponse] = []
    client.add_sync_observer(seen.append)
    sync = SyncResponse.from_dict({"next_batch": "s1", "rooms": {}})
    assert isinstance(sync, SyncResponse)
    await client.receive_response(sync)
    client.remove_sync_observer(seen.append)
    await client.receive_response(sync)
    assert seen == [sync]
