"""Property-based: whatever a server answers, only typed results and typed errors come out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from datetime import timedelta
from typing import Any

from aioresponses import aioresponses
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nio_delayed import (
    DelayedAsyncClient,
    DelayedEventError,
    DelayedEventsListResponse,
    GetDelayedEventResponse,
    RequestPolicy,
    RoomPutStateDelayedResponse,
    RoomSendDelayedResponse,
    UpdateDelayedEventResponse,
)
from nio_delayed.errors import ErrorKind, classify_error
from nio_delayed.models import MalformedAnswer, parse_delayed_event, parse_delayed_events_page
from nio_delayed.support import parse_capabilities, parse_versions

HS = "https://hs.example"
UNSTABLE = f"{HS}/_matrix/client/unstable/org.matrix.msc4140"

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=15,
)
# Objects with the keys the parsers look for, holding anything: reaches the deep branches.
KEYS = [
    "delay_id", "room_id", "type", "state_key", "content", "delay", "delay_ms", "running_since",
    "delayed_since_ts", "scheduled_at", "finalised", "finalised_ts", "origin_server_ts", "event_id",
    "error", "errcode", "retry_after_ms", "max_delay", "max_delay_ms", "delayed_events",
    "scheduled", "next_batch", "delayed_event", "outcome", "reason", "unstable_features",
    "capabilities", "org.matrix.msc4140", "org.matrix.msc4140.errcode",
]  # fmt: skip
shaped = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8)
bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    shaped.map(lambda v: json.dumps(v).encode()),
)
statuses = st.integers(min_value=100, max_value=599)


@given(statuses, bodies, st.none() | st.text(max_size=30))
def test_error_classification_never_raises(
    status: int, body: bytes, retry_after: str | None
) -> None:
    info = classify_error(status, body, retry_after, now=1_000_000.0)
    assert isinstance(info.kind, ErrorKind)
    assert isinstance(info.message, str)
    assert info.message


@given(st.one_of(json_values, shaped))
def test_event_parsing_raises_only_malformed_answer(value: Any) -> None:
    with contextlib.suppress(MalformedAnswer):
        parse_delayed_event(value)
    with contextlib.suppress(MalformedAnswer):
        parse_delayed_events_page(value)


@given(st.one_of(json_values, shaped))
def test_support_parsing_never_raises(value: Any) -> None:
    parse_versions(value)
    parse_capabilities(value)


def _client() -> DelayedAsyncClient:
    client = DelayedAsyncClient(HS, "@bot:hs.example")
    client.restore_login("@bot:hs.example", "DEV", "token")
    client.delayed_events_policy = RequestPolicy(timeout=timedelta(seconds=1), max_attempts=1)
    return client


async def _against(status: int, body: bytes) -> list[object]:
    """Every call of the API against a legacy server that answers ``status``/``body`` to all
    delayed-event requests."""
    client = _client()
    results: list[object] = []
    try:
        await _calls(client, results, status, body)
    finally:
        await client.close()
    return results


async def _calls(
    client: DelayedAsyncClient, results: list[object], status: int, body: bytes
) -> None:
    with aioresponses() as http:
        http.get(
            f"{HS}/_matrix/client/versions",
            payload={"unstable_features": {"org.matrix.msc4140": True}},
            repeat=True,
        )
        http.get(f"{HS}/_matrix/client/v3/capabilities", payload={"capabilities": {}}, repeat=True)
        http.put(
            re.compile(rf"^{re.escape(UNSTABLE)}/rooms/.*/delayed_event/"),
            status=404,
            payload={"errcode": "M_UNRECOGNIZED"},
            repeat=True,
        )
        for method in (http.get, http.put, http.post):
            method(
                re.compile(r".*(/send/|/state/|delayed_events).*"),
                status=status,
                body=body,
                content_type="application/json",
                repeat=True,
            )
        results.append(
            await client.room_send_delayed("!r:x", "m.room.message", {"b": 1}, timedelta(seconds=1))
        )
        results.append(
            await client.room_put_state_delayed("!r:x", "t", {}, timedelta(seconds=1), "k")
        )
        results.append(await client.restart_delayed_event("syd_x"))
        results.append(await client.cancel_delayed_event("syd_x"))
        results.append(await client.send_delayed_event_now("syd_x"))
        results.append(await client.get_delayed_event("syd_x"))
        results.append(await client.delayed_events())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(statuses, bodies)
# A valid answer to every call: each success type must be among the accepted ones.
@example(200, b'{"delay_id": "syd_abc"}')
def test_every_api_call_returns_a_typed_result_whatever_the_server_says(
    status: int, body: bytes
) -> None:
    for result in asyncio.run(_against(status, body)):
        assert isinstance(
            result,
            (
                DelayedEventError,
                RoomSendDelayedResponse,
                RoomPutStateDelayedResponse,
                UpdateDelayedEventResponse,
                GetDelayedEventResponse,
                DelayedEventsListResponse,
            ),
        ), result
        if isinstance(result, DelayedEventError):
            assert result.message
            if 200 <= status < 300:
                # A "success" that is not a valid answer is never passed off as one. (A body
                # that reads as an m.room.encryption event makes the room encrypted: refused.)
                encrypted = result.kind is ErrorKind.UNSUPPORTED and "encrypted" in result.message
                assert encrypted or result.kind in (
                    ErrorKind.SERVER_ERROR,
                    ErrorKind.SENT_IMMEDIATELY,
                )
        elif status >= 300:
            raise AssertionError(f"HTTP {status} became a success: {result!r}")
