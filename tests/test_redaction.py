"""Text a server or a proxy wrote is shown without the client's secrets: the access token and
every delay_id it knows, however the server echoes them."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nio_delayed import DelayedEventError, ErrorKind
from nio_delayed.delay_id import redact, shorten
from nio_delayed.errors import MAX_MESSAGE_CHARS, ErrorInfo, classify_error
from nio_delayed.request_builders import DelayedEventAction, lookup_request, update_request
from nio_delayed.support import Dialect, ManagementForm
from nio_delayed.transport import HttpAnswer, outcome_result

TOKEN = "syt_Ym90_SECRETtokenSECRETtoken_1a2b3c"
DELAY_ID = "syd_SECRETdelayidSECRET"
OTHER_ID = "syd_ANOTHERsecretID"
SECRETS = (TOKEN, DELAY_ID, OTHER_ID)


def _clean(text: str) -> None:
    assert "SECRET" not in text
    assert "ANOTHER" not in text


@pytest.mark.parametrize(
    "echo",
    [
        lambda s: s,
        lambda s: quote(s, safe=""),
        lambda s: json.dumps(s)[1:-1],
    ],
)
def test_redact_finds_a_secret_as_sent_encoded_or_escaped(echo: object) -> None:
    assert callable(echo)
    weird = 'syd_"SECRET/with\\odd chars"'
    text = f"token {echo(TOKEN)} id {echo(DELAY_ID)} odd {echo(weird)}"
    shown = redact(text, (*SECRETS, weird))
    _clean(shown)
    assert shorten(TOKEN) in shown  # still recognisable


def test_redact_replaces_the_longer_secret_first_and_ignores_empty_ones() -> None:
    inner, outer = "syd_SECRETabc", "syd_SECRETabc_SECRETmore"
    assert redact(f"<{outer}>", ["", inner, outer]) == f"<{shorten(outer)}>"
    assert redact("nothing here", []) == "nothing here"


def test_a_server_echoing_secrets_in_its_error_message() -> None:
    body = {
        "errcode": f"M_{DELAY_ID}",
        "error": f"Unknown token {TOKEN} for /delayed_events/{DELAY_ID} and {OTHER_ID}",
    }
    info = classify_error(403, json.dumps(body).encode(), secrets=SECRETS)
    assert info.kind is ErrorKind.FORBIDDEN
    _clean(info.message)
    _clean(info.errcode or "")
    _clean(str(DelayedEventError.from_info(info)))
    _clean(repr(DelayedEventError.from_info(info)))


def test_a_proxy_echoing_secrets_in_a_page_that_is_not_json() -> None:
    page = (
        f"<html><pre>POST /_matrix/client/v1/delayed_events/{quote(DELAY_ID)}/restart\n"
        f"Authorization: Bearer {TOKEN}</pre></html>"
    ).encode()
    info = classify_error(502, page, secrets=SECRETS)
    assert info.kind is ErrorKind.SERVER_ERROR
    _clean(info.message)


@pytest.mark.parametrize("at", [0, 150, 190, 199, MAX_MESSAGE_CHARS - 10, MAX_MESSAGE_CHARS - 1])
def test_a_secret_cut_by_the_length_limit_is_still_redacted(at: int) -> None:
    # Cut first, redact second, and the head of a secret across the cut would be left over.
    text = "x" * at + TOKEN + "y" * 2000
    for body in (text.encode(), json.dumps({"errcode": "M_X", "error": text}).encode()):
        info = classify_error(500, body, secrets=SECRETS)
        assert "SECRET" not in info.message
        assert shorten(TOKEN) in info.message or at > MAX_MESSAGE_CHARS - len(shorten(TOKEN))
        assert len(info.message) <= MAX_MESSAGE_CHARS + 100


def test_secrets_in_a_redirect_location_are_not_told() -> None:
    answer = HttpAnswer(
        307, b"", location=f"https://{TOKEN}@evil.example/x?id={DELAY_ID}&access_token={TOKEN}"
    )
    info = outcome_result(answer, secrets=SECRETS)
    assert not isinstance(info, dict)
    _clean(info.message)


def test_every_error_outcome_is_redacted() -> None:
    for answer in (
        HttpAnswer(400, json.dumps({"errcode": "M_X", "error": TOKEN}).encode()),
        HttpAnswer(429, DELAY_ID.encode()),
        HttpAnswer(404, f"Cannot GET /x/{quote(OTHER_ID)}".encode()),
    ):
        info = outcome_result(answer, secrets=SECRETS)
        assert isinstance(info, ErrorInfo)
        _clean(info.message)


def test_requests_carry_their_delay_id_as_a_secret_and_never_show_it() -> None:
    requests = [lookup_request(Dialect.STABLE, DELAY_ID)] + [
        update_request(Dialect.LEGACY, DELAY_ID, DelayedEventAction.CANCEL, form)
        for form in ManagementForm
    ]
    for request in requests:
        assert request.secrets == (DELAY_ID,)
        assert DELAY_ID in request.path  # what is sent
        _clean(repr(request))
        _clean(request.log_path)


def test_an_answer_never_shows_its_body() -> None:
    _clean(repr(HttpAnswer(500, f"echo {TOKEN}".encode(), location=f"/x/{DELAY_ID}")))


@given(
    st.integers(min_value=300, max_value=599),
    st.text(max_size=700),
    st.text(max_size=700),
    st.sampled_from(SECRETS),
    st.sampled_from(["raw", "json-error", "json-errcode", "quoted"]),
)
def test_no_error_answer_shows_a_secret_however_it_is_placed(
    status: int, before: str, after: str, secret: str, how: str
) -> None:
    text = before + (quote(secret, safe="") if how == "quoted" else secret) + after
    if how in ("raw", "quoted"):
        body = text.encode(errors="surrogatepass")
    else:
        field = "error" if how == "json-error" else "errcode"
        body = json.dumps({field: text}).encode()
    info = outcome_result(HttpAnswer(status, body, location=text), secrets=SECRETS)
    assert isinstance(info, ErrorInfo)
    for shown in (info.message, info.errcode or "", repr(info)):
        assert secret not in shown
