"""Reading what a server advertises, and refusing bad input before any request."""

from __future__ import annotations

from datetime import timedelta

import pytest

from nio_delayed.delay_id import DelayId, shorten
from nio_delayed.support import (
    Advertised,
    Limits,
    parse_capabilities,
    parse_versions,
    probe_says_unstable_endpoint,
)
from nio_delayed.validation import (
    MAX_CONTENT_BYTES,
    MAX_JSON_INT,
    InvalidInput,
    check_content,
    check_delay_id,
    check_event_type,
    check_room_id,
    check_state_key,
    delay_to_ms,
)

# -- /versions, /capabilities, the probe ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"unstable_features": {"org.matrix.msc4140": True}}, Advertised(False, True)),
        ({"unstable_features": {"org.matrix.msc4140": False}}, Advertised(False, False)),
        ({"unstable_features": {"org.matrix.msc4140.stable": True}}, Advertised(True, False)),
        ({"unstable_features": {"org.matrix.msc4140": "true"}}, Advertised(False, False)),
        ({"versions": ["v1.11"]}, Advertised(False, False)),
        ({"unstable_features": []}, Advertised(False, False)),
        ("garbage", Advertised(False, False)),
    ],
)
def test_versions_flags(body: object, expected: Advertised) -> None:
    assert parse_versions(body) == expected


def test_current_synapse_capability() -> None:
    body = {
        "capabilities": {
            "org.matrix.msc4140.delayed_events": {"max_delay_ms": 86400000, "max_scheduled": 100}
        }
    }
    assert parse_capabilities(body) == (Limits(True, 86_400_000, 100), False)


def test_stable_capability_wins_and_says_so() -> None:
    body = {
        "capabilities": {
            "m.delayed_events": {"max_delay_ms": 1000},
            "org.matrix.msc4140.delayed_events": {"max_delay_ms": 5},
        }
    }
    limits, stable = parse_capabilities(body)
    assert stable
    assert (limits.max_delay_ms, limits.max_scheduled) == (1000, None)


def test_feature_turned_off_is_max_delay_zero() -> None:
    body = {"capabilities": {"org.matrix.msc4140.delayed_events": {"max_delay_ms": 0}}}
    limits, _ = parse_capabilities(body)
    assert limits.disabled


@pytest.mark.parametrize(
    "body",
    [{}, {"capabilities": {}}, {"capabilities": {"m.change_password": {}}}, None],
)
def test_absent_capability(body: object) -> None:
    limits, stable = parse_capabilities(body)
    assert not limits.present
    assert not limits.disabled
    assert not stable


def test_capability_fields_of_the_wrong_type_are_ignored() -> None:
    body = {"capabilities": {"m.delayed_events": {"max_delay_ms": "big", "max_scheduled": -1}}}
    assert parse_capabilities(body)[0] == Limits(True, None, None)


@pytest.mark.parametrize(
    ("status", "errcode", "has_endpoint"),
    [
        (404, "M_UNRECOGNIZED", False),  # Synapse
        (405, "M_UNRECOGNIZED", False),
        (405, None, False),
        (404, None, False),  # a bare 404 from a proxy
        (400, "M_BAD_JSON", True),  # the endpoint exists and refused the empty body
        (400, "M_INVALID_PARAM", True),
        (403, "M_FORBIDDEN", True),
        (404, "M_NOT_FOUND", True),  # unknown room
        (429, "M_LIMIT_EXCEEDED", True),
    ],
)
def test_probe_answers(status: int, errcode: str | None, has_endpoint: bool) -> None:
    assert probe_says_unstable_endpoint(status, errcode) is has_endpoint


# -- input checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delay", "ms"),
    [
        (timedelta(milliseconds=1), 1),
        (timedelta(seconds=5), 5000),
        (timedelta(seconds=2.5), 2500),
        (timedelta(hours=24), 86_400_000),
        (timedelta(milliseconds=MAX_JSON_INT), MAX_JSON_INT),
    ],
)
def test_valid_delays(delay: object, ms: int) -> None:
    assert delay_to_ms(delay) == ms


@pytest.mark.parametrize(
    ("delay", "says"),
    [
        (0, "positive"),
        (-1, "positive"),
        (timedelta(0), "positive"),
        (timedelta(seconds=-1), "positive"),
        (timedelta(microseconds=1500), "whole number of milliseconds"),
        (1.5, "datetime.timedelta"),
        ("1000", "datetime.timedelta"),
        (True, "datetime.timedelta"),
        (None, "datetime.timedelta"),
        (timedelta(milliseconds=MAX_JSON_INT + 1), "at most"),
        (MAX_JSON_INT + 1, "at most"),
    ],
)
def test_invalid_delays(delay: object, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        delay_to_ms(delay)


@pytest.mark.parametrize("room_id", ["!abc:server", "!hashonly"])
def test_valid_room_ids(room_id: str) -> None:
    assert check_room_id(room_id) == room_id


@pytest.mark.parametrize(
    ("room_id", "says"),
    [
        ("#alias:server", "room_resolve_alias"),
        ("abc", "must look like"),
        ("!", "must look like"),
        ("", "empty"),
        ("!a b:c", "whitespace"),
        ("!a\x00:c", "control"),
        ("!" + "a" * 300, "255 bytes"),
        (5, "must be a str"),
    ],
)
def test_invalid_room_ids(room_id: object, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        check_room_id(room_id)


def test_event_types_and_state_keys() -> None:
    assert check_event_type("m.room.message") == "m.room.message"
    with pytest.raises(InvalidInput, match="empty"):
        check_event_type("")
    assert check_state_key("") == ""
    assert check_state_key("@bot:x device 1") == "@bot:x device 1"
    with pytest.raises(InvalidInput, match="control"):
        check_state_key("a\nb")
    with pytest.raises(InvalidInput, match="must be a str"):
        check_state_key(None)


def test_content_checks() -> None:
    assert check_content({"a": [1, {"b": None}]}) == {"a": [1, {"b": None}]}
    for bad, says in [
        ([1], "must be a dict"),
        ({"x": float("nan")}, "integers only"),
        ({"x": {1, 2}}, "not JSON-serialisable"),
        ({"x": 2**60}, "outside"),
        ({"x": "a" * MAX_CONTENT_BYTES}, "fit in an event"),
    ]:
        with pytest.raises(InvalidInput, match=says):
            check_content(bad)


def test_bad_delay_ids_are_refused_without_echoing_them() -> None:
    assert check_delay_id("syd_x") == "syd_x"
    for bad in ["", "syd x", "syd\n", 5]:
        with pytest.raises(InvalidInput) as caught:
            check_delay_id(bad)
        assert str(bad) not in str(caught.value) or bad == ""


def test_shortened_ids_give_away_at_most_a_third() -> None:
    assert shorten("syd_abcdefghijklmnopqrst") == "syd_ab…"
    assert shorten("abc") == "a…"
    assert shorten("ab") == "…"
    assert repr(DelayId("syd_abcdefghijklmnopqrst")) == "DelayId('syd_ab…')"
