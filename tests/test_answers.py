"""What comes back: a bounded read, no redirect followed, odd Retry-After values read cleanly,
and a server's delay_id checked like a caller's."""

from __future__ import annotations

import asyncio
import gzip
import json
import math
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from nio_delayed.errors import (
    MAX_RETRY_AFTER_MS,
    ErrorKind,
    classify_error,
    parse_retry_after_header,
    retry_after_ms,
)
from nio_delayed.models import (
    MalformedAnswer,
    parse_delay_id,
    parse_delayed_event,
    parse_delayed_events_page,
    parse_scheduled,
)
from nio_delayed.request_builders import HttpRequest, versions_request
from nio_delayed.transport import (
    MAX_ANSWER_BYTES,
    HttpAnswer,
    NoAnswer,
    RequestPolicy,
    outcome_result,
    read_answer,
    send_with_retries,
)

NOW = 1_000_000.0
HUGE = b'{"delayed_events": [' + b'{"x": 1},' * 200_000 + b"{}]}"


async def _big(_: web.Request) -> web.Response:
    return web.Response(body=HUGE, content_type="application/json")


async def _streamed(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()  # chunked: no Content-Length to refuse it by
    await response.prepare(request)
    for _ in range(40):
        await response.write(b" " * 65_536)
    await response.write_eof()
    return response


async def _bomb(_: web.Request) -> web.Response:
    body = gzip.compress(b"[" + b" " * (8 * MAX_ANSWER_BYTES) + b"]")
    assert len(body) < 64 * 1024  # small on the wire, huge once decompressed
    return web.Response(body=body, headers={"Content-Encoding": "gzip"})


async def _small(_: web.Request) -> web.Response:
    return web.json_response({"delay_id": "syd_ok"}, status=200)


async def _redirect(_: web.Request) -> web.Response:
    raise web.HTTPTemporaryRedirect("https://evil.example:8448/steal?access_token=tok_SECRET123")


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_get("/big", _big)
    app.router.add_get("/streamed", _streamed)
    app.router.add_get("/bomb", _bomb)
    app.router.add_put("/small", _small)
    app.router.add_put("/redirect", _redirect)
    app.router.add_put("/target", _small)
    async with TestServer(app, host="127.0.0.1") as test_server:
        yield test_server


async def _get(server: TestServer, method: str, path: str) -> HttpAnswer:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, str(server.make_url(path)), data=b"{}", allow_redirects=False
        ) as response,
    ):
        return await read_answer(response)


@pytest.mark.parametrize("path", ["/big", "/streamed", "/bomb"])
async def test_a_body_past_the_limit_is_not_read_and_is_a_server_error(
    server: TestServer, path: str
) -> None:
    answer = await _get(server, "GET", path)
    assert (answer.status, answer.oversized, answer.body) == (200, True, b"")
    info = outcome_result(answer)
    assert not isinstance(info, dict)
    assert info.kind is ErrorKind.SERVER_ERROR
    assert "too long" in info.message


async def test_an_ordinary_answer_is_read_whole(server: TestServer) -> None:
    answer = await _get(server, "PUT", "/small")
    assert not answer.oversized
    assert outcome_result(answer) == {"delay_id": "syd_ok"}


async def test_a_redirect_is_not_followed_and_its_secrets_stay_out(server: TestServer) -> None:
    answer = await _get(server, "PUT", "/redirect")
    assert answer.status == 307
    info = outcome_result(answer, secrets=["tok_SECRET123"])
    assert not isinstance(info, dict)
    assert info.kind is ErrorKind.SERVER_ERROR
    assert "https://evil.example:8448" in info.message
    assert "not followed" in info.message
    assert "SECRET" not in info.message
    assert "steal" not in info.message  # the path and query are not told
    assert "tok_SECRET123" not in repr(answer)


@pytest.mark.parametrize(
    ("location", "told"),
    [
        ("/_matrix/client/v3/elsewhere", "another path on the same server"),
        (None, "another path on the same server"),
        ("https://[::1", "an unreadable location"),
        ("https://user:tok_SECRET123@evil.example/", "https://evil.example"),
    ],
)
def test_every_redirect_is_told_without_its_path(location: str | None, told: str) -> None:
    info = outcome_result(HttpAnswer(302, b"", location=location), secrets=["tok_SECRET123"])
    assert not isinstance(info, dict)
    assert told in info.message
    assert "SECRET" not in info.message


def test_no_answer_is_a_network_error_without_secrets() -> None:
    info = outcome_result(
        NoAnswer("connection failed near syd_SECRETID", reached=True), secrets=["syd_SECRETID"]
    )
    assert not isinstance(info, dict)
    assert info.kind is ErrorKind.NETWORK
    assert "syd_SECRETID" not in info.message


@pytest.mark.parametrize("body", [b"[1]", b"not json", b"[" * 100_000 + b"]" * 100_000])
def test_a_success_that_is_not_a_json_object_is_a_server_error(body: bytes) -> None:
    info = outcome_result(HttpAnswer(200, body))
    assert not isinstance(info, dict)
    assert info.kind is ErrorKind.SERVER_ERROR


def test_deeply_nested_error_bodies_are_classified_not_raised() -> None:
    body = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    assert classify_error(500, body).kind is ErrorKind.SERVER_ERROR
    assert HttpAnswer(500, body).json() is None


# -- Retry-After -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "ms"),
    [
        ("5", 5000),
        (" 5 ", 5000),
        ("0", 0),
        ("1.5", 1500),
        ("0.0001", 1),  # rounded up: never earlier than asked
        ("9" * 30, MAX_RETRY_AFTER_MS),
        ("-5", None),
        ("5s", None),
        ("²", None),  # a digit to str.isdigit, not to int()
        ("١٢", None),  # Arabic-Indic digits: not HTTP
        ("9" * 5000, None),  # past int()'s digit limit
        ("nan", None),
        ("inf", None),
        ("1e9", None),
        ("", None),
        ("garbage", None),
        ("Mon, 12 Jan 1970 13:46:45 GMT", 5000),  # NOW + 5 s, as an HTTP date
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0),  # in the past: now
        ("Fri, 31 Dec 9999 23:59:59 GMT", 253_402_300_799_000 - int(NOW * 1000)),
        ("Mon, 32 Foo 99999999 99:99:99 GMT", None),
        ("Mon, 01 Jan 0001 00:00:00 -9999", None),  # an offset datetime refuses
    ],
)
def test_retry_after_header_values(header: str, ms: int | None) -> None:
    assert parse_retry_after_header(header, NOW) == ms


def test_a_retry_after_date_needs_a_clock() -> None:
    assert parse_retry_after_header("Mon, 12 Jan 1970 13:46:45 GMT") is None
    assert parse_retry_after_header("Mon, 12 Jan 1970 13:46:45 GMT", math.nan) is None


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (1500, 1500),
        (1500.2, 1501),
        (10**400, MAX_RETRY_AFTER_MS),  # too large for a float
        (math.inf, MAX_RETRY_AFTER_MS),
        (-1, 7000),  # not a wait: the header's
        (math.nan, 7000),
        ("1500", 7000),
        (True, 7000),
    ],
)
def test_retry_after_ms_from_the_body_else_the_header(value: object, ms: int) -> None:
    assert retry_after_ms({"retry_after_ms": value}, "7", NOW) == ms


@given(st.one_of(st.text(max_size=60), st.none()), st.one_of(st.none(), st.floats(), st.integers()))
def test_retry_after_never_raises_and_stays_in_range(header: str | None, body: Any) -> None:
    for ms in (
        parse_retry_after_header(header, NOW),
        retry_after_ms({"retry_after_ms": body}, header, NOW),
    ):
        assert ms is None or 0 <= ms <= MAX_RETRY_AFTER_MS


def test_a_rate_limit_with_odd_values_is_still_a_rate_limit() -> None:
    huge = json.dumps({"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 10**400}).encode()
    info = classify_error(429, huge, "²", now=NOW)
    assert (info.kind, info.retry_after_ms) == (ErrorKind.RATE_LIMITED, MAX_RETRY_AFTER_MS)
    info = classify_error(429, b"slow down", "-3", now=NOW)
    assert (info.kind, info.retry_after_ms) == (ErrorKind.RATE_LIMITED, None)


def test_a_maximum_delay_too_long_to_read_is_ignored() -> None:
    body = {"errcode": "M_UNKNOWN", "error": f"the allowed maximum ({'9' * 5000}ms)"}
    info = classify_error(400, json.dumps(body).encode())
    assert info.max_delay_ms is None


# -- delay_ids the server gives ----------------------------------------------------------------


@pytest.mark.parametrize("delay_id", ["..", ".", "syd x", "syd\n", "\ud800", 5, "a" * 300, [], ""])
def test_a_scheduling_answer_with_an_unusable_delay_id_is_a_server_error(delay_id: object) -> None:
    info = parse_scheduled({"delay_id": delay_id})
    assert not isinstance(info, str)
    assert info.kind is ErrorKind.SERVER_ERROR
    assert info.http_status == 200


def test_a_scheduling_answer_is_its_delay_id_or_says_it_was_sent_at_once() -> None:
    assert parse_scheduled({"delay_id": "syd_abc"}) == "syd_abc"
    assert repr(parse_scheduled({"delay_id": "syd_abcdefghijklmn"})) == "DelayId('syd_ab…')"
    sent = parse_scheduled({"event_id": "$e"})
    assert not isinstance(sent, str)
    assert sent.kind is ErrorKind.SENT_IMMEDIATELY
    missing = parse_scheduled({})
    assert not isinstance(missing, str)
    assert missing.kind is ErrorKind.SERVER_ERROR


@pytest.mark.parametrize(
    "fields",
    [
        {"delay_id": ".."},
        {"delay_id": "a b"},
        {"delay_id": "\ud800"},
        {"room_id": "!r\ud800"},
        {"type": ".."},
        {"state_key": "."},
        {"state_key": "\udfff"},
    ],
)
def test_listed_events_the_library_could_not_manage_are_malformed(fields: dict[str, Any]) -> None:
    event = {"delay_id": "syd_a", "room_id": "!r:x", "type": "m.t", "content": {}, **fields}
    with pytest.raises(MalformedAnswer):
        parse_delayed_event(event)
    with pytest.raises(MalformedAnswer):
        parse_delayed_events_page({"delayed_events": [event]})


def test_a_server_delay_id_passes_the_same_check_as_a_callers() -> None:
    assert parse_delay_id("syd_ok") == "syd_ok"
    with pytest.raises(MalformedAnswer, match="cannot use"):
        parse_delay_id("..")
    with pytest.raises(MalformedAnswer, match="no delay_id"):
        parse_delay_id(None)


@pytest.mark.parametrize(
    ("retry_after", "attempts"),
    [
        ("nan", 1),
        ("inf", 1),
        ("-1", 1),
        ("1e400", 1),
        ("9" * 5000, 1),
        ("99999999999", 1),  # longer than the policy sits through: the error is returned
        ("Thu, 01 Jan 1970 00:00:00 GMT", 3),  # a date in the past: try again at once
        ("0.01", 3),
    ],
)
async def test_a_retry_loop_reads_any_retry_after_and_never_hangs(
    retry_after: str, attempts: int
) -> None:
    sent: list[float] = []

    async def sender(request: HttpRequest, timeout: float) -> HttpAnswer:
        sent.append(timeout)
        return HttpAnswer(429, b"slow down", retry_after)

    policy = RequestPolicy(
        timeout=timedelta(seconds=1), max_attempts=3, max_retry_after=timedelta(milliseconds=50)
    )
    outcome = await asyncio.wait_for(
        send_with_retries(sender, versions_request(), policy), timeout=5
    )
    assert isinstance(outcome, HttpAnswer)
    assert len(sent) == attempts
    info = outcome_result(outcome, now=NOW)
    assert not isinstance(info, dict)
    assert info.kind is ErrorKind.RATE_LIMITED


def test_a_pagination_token_that_could_not_be_sent_back_is_malformed() -> None:
    with pytest.raises(MalformedAnswer, match="next_batch"):
        parse_delayed_events_page({"delayed_events": [], "next_batch": "a\ud800"})
    assert parse_delayed_events_page({"delayed_events": [], "next_batch": "é ?&"})[1] == "é ?&"
