"""Every error shape seen from servers and MSC revisions (see the README's Errors section),
classified without I/O."""

from __future__ import annotations

import json

import pytest

from nio_delayed import DelayedEventError
from nio_delayed.errors import ErrorKind, classify_error, is_unrecognized, parse_retry_after_header


def err(status: int, body: object, retry_after: str | None = None):  # type: ignore[no-untyped-def]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return classify_error(status, raw, retry_after, now=1_000_000.0)


def test_feature_off_on_current_synapse_is_unsupported() -> None:
    info = err(
        403, {"errcode": "M_FORBIDDEN", "error": "Sending delayed events has been disallowed"}
    )
    assert info.kind is ErrorKind.UNSUPPORTED
    assert (info.errcode, info.http_status) == ("M_FORBIDDEN", 403)


def test_feature_off_on_older_servers_is_unsupported() -> None:
    info = err(
        400,
        {
            "errcode": "M_UNKNOWN",
            "error": "Delayed events are not supported on this server",
            "org.matrix.msc4140.errcode": "M_MAX_DELAY_UNSUPPORTED",
        },
    )
    assert info.kind is ErrorKind.UNSUPPORTED


def test_plain_forbidden_stays_forbidden() -> None:
    info = err(403, {"errcode": "M_FORBIDDEN", "error": "User not in room"})
    assert info.kind is ErrorKind.FORBIDDEN


def test_delay_too_large_on_current_synapse_reads_the_maximum_from_the_message() -> None:
    info = err(
        400,
        {
            "errcode": "ORG.MATRIX.MSC4140_DELAY_TOO_LARGE",
            "error": "The requested delay (999999999999ms) exceeds the allowed maximum "
            "(86400000ms)",
        },
    )
    assert info.kind is ErrorKind.DELAY_TOO_LARGE
    assert info.max_delay_ms == 86_400_000


def test_delay_too_large_on_older_synapse_reads_the_nested_fields() -> None:
    info = err(
        400,
        {
            "errcode": "M_UNKNOWN",
            "error": "The requested delay exceeds the allowed maximum.",
            "org.matrix.msc4140.errcode": "M_MAX_DELAY_EXCEEDED",
            "org.matrix.msc4140.max_delay": 86_400_000,
        },
    )
    assert info.kind is ErrorKind.DELAY_TOO_LARGE
    assert info.max_delay_ms == 86_400_000


@pytest.mark.parametrize(
    ("status", "body", "max_delay"),
    [
        (400, {"errcode": "M_DELAY_TOO_LARGE", "error": "too large"}, None),
        (400, {"errcode": "M_MAX_DELAY_EXCEEDED", "error": "x", "max_delay": 3600000}, 3600000),
        (403, {"errcode": "M_FORBIDDEN", "error": "too long", "max_delay_ms": 60000}, 60000),
    ],
)
def test_delay_too_large_in_merged_msc_forms(
    status: int, body: object, max_delay: int | None
) -> None:
    info = err(status, body)
    assert info.kind is ErrorKind.DELAY_TOO_LARGE
    assert info.max_delay_ms == max_delay


def test_invalid_delay_is_invalid() -> None:
    info = err(
        400,
        {
            "errcode": "M_INVALID_PARAM",
            "error": "Query parameter org.matrix.msc4140.delay must be a positive integer.",
        },
    )
    assert info.kind is ErrorKind.INVALID


def test_huge_integer_500_is_a_server_error() -> None:
    info = err(500, {"errcode": "M_UNKNOWN", "error": "Internal server error"})
    assert info.kind is ErrorKind.SERVER_ERROR


def test_too_many_scheduled_takes_retry_after_from_the_header() -> None:
    info = err(
        429,
        {"errcode": "M_LIMIT_EXCEEDED", "error": "The maximum number of delayed events"},
        "1200",
    )
    assert info.kind is ErrorKind.RATE_LIMITED
    assert info.retry_after_ms == 1_200_000


def test_management_rate_limit_takes_retry_after_ms_from_the_body_first() -> None:
    info = err(
        429,
        {"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": 850},
        "5",
    )
    assert info.kind is ErrorKind.RATE_LIMITED
    assert info.retry_after_ms == 850


def test_retry_after_as_http_date() -> None:
    assert parse_retry_after_header("Mon, 12 Jan 1970 13:46:50 GMT", now=1_000_000.0) == 10_000
    assert parse_retry_after_header("soon", now=1_000_000.0) is None
    assert parse_retry_after_header(None) is None


def test_not_found_is_not_found() -> None:
    info = err(404, {"errcode": "M_NOT_FOUND", "error": "Delayed event not found"})
    assert info.kind is ErrorKind.NOT_FOUND
    assert not is_unrecognized(info)


def test_conflict_with_the_final_outcome_is_a_conflict() -> None:
    info = err(409, {"errcode": "M_UNKNOWN", "error": "already sent"})
    assert info.kind is ErrorKind.CONFLICT


@pytest.mark.parametrize("status", [404, 405])
def test_unrecognized_endpoint_is_unsupported_and_marked(status: int) -> None:
    info = err(status, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})
    assert info.kind is ErrorKind.UNSUPPORTED
    assert is_unrecognized(info)


@pytest.mark.parametrize(
    ("errcode", "status"),
    [("M_MISSING_TOKEN", 401), ("M_UNKNOWN_TOKEN", 401), ("M_UNKNOWN_TOKEN", 403), (None, 401)],
)
def test_token_problems_are_unauthorized_not_forbidden(errcode: str | None, status: int) -> None:
    info = err(status, {"errcode": errcode, "error": "x"})
    assert info.kind is ErrorKind.UNAUTHORIZED
    assert not info.soft_logout


def test_a_soft_logout_is_kept_on_the_error() -> None:
    body = {"errcode": "M_UNKNOWN_TOKEN", "error": "Token expired", "soft_logout": True}
    info = err(401, body)
    assert (info.kind, info.soft_logout) == (ErrorKind.UNAUTHORIZED, True)
    error = DelayedEventError.from_info(info)
    assert error.soft_logout
    assert "[unauthorized] 401 M_UNKNOWN_TOKEN" in str(error)
    assert "(soft logout)" in str(error)


@pytest.mark.parametrize("flag", ["true", 1, None])
def test_only_a_true_soft_logout_counts(flag: object) -> None:
    body = {"errcode": "M_UNKNOWN_TOKEN", "error": "x", "soft_logout": flag}
    assert not err(401, body).soft_logout


def test_soft_logout_outside_a_token_error_is_ignored() -> None:
    assert not err(403, {"errcode": "M_FORBIDDEN", "error": "x", "soft_logout": True}).soft_logout


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (404, ErrorKind.SERVER_ERROR),  # a proxy's 404 must not read as "the event is gone"
        (409, ErrorKind.SERVER_ERROR),
        (400, ErrorKind.SERVER_ERROR),
        (403, ErrorKind.FORBIDDEN),
        (401, ErrorKind.UNAUTHORIZED),
        (429, ErrorKind.RATE_LIMITED),
        (502, ErrorKind.SERVER_ERROR),
    ],
)
def test_non_json_error_bodies_are_errors(status: int, kind: ErrorKind) -> None:
    info = err(status, b"<html>Bad Gateway</html>", "3")
    assert info.kind is kind
    assert "not a Matrix error" in info.message
    if kind is ErrorKind.RATE_LIMITED:
        assert info.retry_after_ms == 3000


def test_json_that_is_not_an_object_is_handled() -> None:
    assert err(500, [1, 2]).kind is ErrorKind.SERVER_ERROR
    assert err(404, b"").kind is ErrorKind.SERVER_ERROR


def test_error_without_message_gets_one() -> None:
    info = err(400, {"errcode": "M_BAD_JSON"})
    assert info.kind is ErrorKind.INVALID
    assert "400" in info.message


def test_fields_of_the_wrong_type_are_ignored_not_crashed_on() -> None:
    """Found by the property tests: a list where an errcode belongs."""
    info = err(400, {"errcode": 5, "error": ["x"], "org.matrix.msc4140.errcode": []})
    assert info.kind is ErrorKind.INVALID
    assert info.errcode is None
    assert info.message == "HTTP 400 error"
