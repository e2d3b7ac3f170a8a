"""The hardening promises through the public API, against the fake homeserver: hostile input gives
INVALID and sends nothing; hostile answers give typed errors with no secret in them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nio_delayed import (
    ErrorKind,
    ExitPolicy,
    InvalidInput,
    KeepAliveManager,
    RoomPutStateDelayedError,
    RoomPutStateDelayedResponse,
    RoomSendDelayedError,
    RoomSendDelayedResponse,
)
from nio_delayed.testing import FakeHomeserver, Fault

from .conftest import fake_client

LONE_SURROGATE = "\ud800"
HOSTILE_CONTENT: list[Any] = [
    {"a": LONE_SURROGATE},
    {LONE_SURROGATE: 1},
    {1: "a", "1": "b"},
    {"a": float("nan")},
    {"a": 1.5},
    {"a": 2**53},
    {"a": 10**5000},
    {"body": "a" * 64_000},
]


async def test_hostile_input_is_invalid_and_sends_nothing(fake: FakeHomeserver) -> None:
    client = await fake_client(fake)
    try:
        calls = [
            client.room_send_delayed("!r:fake", "m.t", content, timedelta(seconds=5))
            for content in HOSTILE_CONTENT
        ]
        calls += [
            client.room_send_delayed("!r:fake", "..", {}, timedelta(seconds=5)),
            client.room_send_delayed("!r:fake", "m.t", {}, timedelta(seconds=5), tx_id="."),
            client.room_put_state_delayed(
                "!r:fake", "m.t", {}, timedelta(seconds=5), state_key=".."
            ),
            client.room_put_state_delayed("!r" + LONE_SURROGATE, "m.t", {}, timedelta(seconds=5)),
            client.restart_delayed_event(".."),
            client.get_delayed_event(LONE_SURROGATE),
        ]
        for call in calls:
            result = await call
            assert getattr(result, "kind", None) is ErrorKind.INVALID, result
        assert not fake.requests_to("/rooms/")
        assert not fake.requests_to("/delayed_events")
    finally:
        await client.close()


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda c: (
            st.lists(c, max_size=3)
            | st.dictionaries(st.text(max_size=3) | st.integers(), c, max_size=3)
        ),
        max_leaves=8,
    )
)
async def test_any_content_is_scheduled_or_refused_as_invalid(value: Any) -> None:
    async with FakeHomeserver() as server:
        client = await fake_client(server)
        try:
            result = await client.room_send_delayed(
                "!r:fake", "m.t", {"v": value}, timedelta(seconds=5)
            )
        finally:
            await client.close()
    if isinstance(result, RoomSendDelayedError):
        assert result.kind is ErrorKind.INVALID, result
        assert not server.requests_to("/delayed_event/")
    else:
        assert isinstance(result, RoomSendDelayedResponse)


async def _schedule(server: FakeHomeserver) -> object:
    """One delayed message, as a fresh client schedules it."""
    client = await fake_client(server)
    try:
        return await client.room_send_delayed(
            "!r:fake", "m.t", {"text": "private"}, timedelta(seconds=5)
        )
    finally:
        await client.close()


@pytest.mark.parametrize("delay_id", ["..", ".", "has space", "\u0000"])
async def test_a_delay_id_the_library_could_not_manage_is_a_server_error(
    fake: FakeHomeserver, delay_id: str
) -> None:
    fake.inject(Fault(path_contains="/delayed_event/", status=200, body={"delay_id": delay_id}))
    result = await _schedule(fake)
    assert isinstance(result, RoomSendDelayedError)
    assert result.kind is ErrorKind.SERVER_ERROR


async def test_a_redirect_is_not_followed(fake: FakeHomeserver) -> None:
    async with FakeHomeserver() as elsewhere:
        fake.inject(
            Fault(
                path_contains="/delayed_event/",
                status=307,
                headers={"Location": elsewhere.url + "/_matrix/client/v3/rooms/x/send/m.t/1"},
            )
        )
        result = await _schedule(fake)
        assert not elsewhere.requests  # no content went to the other origin
    assert isinstance(result, RoomSendDelayedError)
    assert result.kind is ErrorKind.SERVER_ERROR
    assert "not followed" in result.message


async def test_an_answer_too_long_to_read_is_a_server_error(fake: FakeHomeserver) -> None:
    fake.inject(Fault(path_contains="/delayed_event/", status=200, body="x" * (2 << 20)))
    result = await _schedule(fake)
    assert isinstance(result, RoomSendDelayedError)
    assert result.kind is ErrorKind.SERVER_ERROR
    assert "too long" in result.message


async def test_secrets_a_server_echoes_stay_out_of_errors(fake: FakeHomeserver) -> None:
    client = await fake_client(fake)
    token = client.access_token
    try:
        scheduled = await client.room_send_delayed("!r:fake", "m.t", {}, timedelta(seconds=5))
        assert isinstance(scheduled, RoomSendDelayedResponse)
        delay_id = str(scheduled.delay_id)
        echo = f"bad token {token} for {delay_id}"
        fake.inject(
            Fault(path_contains="/restart", status=400, body={"errcode": "M_X", "error": echo})
        )
        fake.inject(Fault(path_contains="/cancel", status=502, body=f"<pre>{echo}</pre>"))
        results = [
            await client.restart_delayed_event(delay_id),
            await client.cancel_delayed_event(delay_id),
        ]
    finally:
        await client.close()
    for result in results:
        for text in (str(result), repr(result), getattr(result, "message", "")):
            assert token not in text
            assert delay_id not in text


async def test_a_policy_given_as_its_value_works_as_that_policy(fake: FakeHomeserver) -> None:
    client = await fake_client(fake)
    manager = KeepAliveManager(client)
    try:
        switch = await manager.add("!r:fake", "m.t", {}, delay=timedelta(minutes=1), on_exit="send")  # type: ignore[arg-type]
        assert switch.on_exit is ExitPolicy.SEND
        with pytest.raises(InvalidInput, match="on_exit"):
            await manager.add("!r:fake", "m.u", {}, delay=timedelta(minutes=1), on_exit="sent")  # type: ignore[arg-type]
    finally:
        await manager.close()
        await client.close()


ids = st.one_of(
    st.text(max_size=12),
    st.text(alphabet="./%2Ee?#!: \ud800", max_size=6),
    st.sampled_from([".", "..", "%2E", "%2E%2E", ".%2e", "a/../b", "!r/..", "!r:fake"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(ids, ids.map(lambda s: "!" + s)), ids, ids)
@example(room_id="!0", event_type="{", state_key="")  # a brace in a path segment
async def test_a_request_reaches_the_endpoint_it_means_or_is_refused(
    room_id: str, event_type: str, state_key: str
) -> None:
    async with FakeHomeserver() as server:
        client = await fake_client(server)
        try:
            result = await client.room_put_state_delayed(
                room_id, event_type, {}, timedelta(seconds=5), state_key=state_key
            )
        finally:
            await client.close()
    if isinstance(result, RoomPutStateDelayedError):
        assert result.kind is ErrorKind.INVALID, result
        assert not server.requests_to("/rooms/")
        return
    assert isinstance(result, RoomPutStateDelayedResponse)
    [scheduled] = server.scheduled()
    assert (scheduled["room_id"], scheduled["type"], scheduled["state_key"]) == (
        room_id,
        event_type,
        state_key,
    )
