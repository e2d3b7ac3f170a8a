"""Parsing delayed events from every field-name variant the servers and MSC revisions use
(docs/protocol.md, "Listing: MSC4486")."""

from __future__ import annotations

from typing import Any

import pytest

from nio_delayed import DelayedEventStatus, DelayId
from nio_delayed.models import MalformedAnswer, parse_delayed_event, parse_delayed_events_page

BASE: dict[str, Any] = {
    "delay_id": "syd_abcdefghijklmnopqrst",
    "room_id": "!r:x",
    "type": "m.room.message",
    "content": {"body": "hi"},
}


def event(**fields: Any) -> dict[str, Any]:
    return {**BASE, **fields}


def test_newest_synapse_fields() -> None:
    parsed = parse_delayed_event(event(delay_ms=5000, delayed_since_ts=1000))
    assert (parsed.delay_ms, parsed.since_ts, parsed.due_ts) == (5000, 1000, 6000)
    assert parsed.status is DelayedEventStatus.SCHEDULED
    assert isinstance(parsed.delay_id, DelayId)
    assert parsed.state_key is None
    assert not parsed.is_state


def test_older_field_names() -> None:
    parsed = parse_delayed_event(event(delay=5000, running_since=1000))
    assert (parsed.delay_ms, parsed.since_ts) == (5000, 1000)


def test_mid_2026_msc_field_name() -> None:
    assert parse_delayed_event(event(delay_ms=1, scheduled_at=7)).since_ts == 7


def test_synapse_163_sends_both_generations_and_the_newest_wins() -> None:
    parsed = parse_delayed_event(
        event(delay_ms=5000, delayed_since_ts=1000, delay=5000, running_since=1000)
    )
    assert (parsed.delay_ms, parsed.since_ts) == (5000, 1000)


def test_state_key_including_empty() -> None:
    parsed = parse_delayed_event(event(state_key=""))
    assert parsed.state_key == ""
    assert parsed.is_state


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"finalised_ts": 9, "event_id": "$e"}, DelayedEventStatus.SENT),
        ({"finalised_ts": 9, "error": "M_FORBIDDEN: no power"}, DelayedEventStatus.FAILED),
        ({"finalised_ts": 9}, DelayedEventStatus.CANCELLED),
        ({"origin_server_ts": 9, "event_id": "$e"}, DelayedEventStatus.SENT),
        ({"finalised": {"finalised_ts": 9, "event_id": "$e"}}, DelayedEventStatus.SENT),
        (
            {"finalised": {"finalised_ts": 9, "error": {"errcode": "M_X"}}},
            DelayedEventStatus.FAILED,
        ),
        ({"finalised": {"finalised_ts": 9}}, DelayedEventStatus.CANCELLED),
        ({"event_id": "$e"}, DelayedEventStatus.SENT),
    ],
)
def test_outcome_shapes(fields: dict[str, Any], status: DelayedEventStatus) -> None:
    parsed = parse_delayed_event(event(delay=10, running_since=1, **fields))
    assert parsed.status is status
    assert parsed.due_ts is None  # not scheduled any more


def test_error_object_becomes_readable_text() -> None:
    parsed = parse_delayed_event(
        event(finalised_ts=9, error={"errcode": "M_FORBIDDEN", "error": "no power"})
    )
    assert parsed.error == "M_FORBIDDEN: no power"
    assert parsed.finalised_ts == 9


def test_synapse_listing() -> None:
    events, next_batch = parse_delayed_events_page(
        {"delayed_events": [event(delay_ms=1), event(delay_id="other", delay=2)]}
    )
    assert [e.delay_id for e in events] == [BASE["delay_id"], "other"]
    assert next_batch is None


def test_older_listing_with_scheduled_and_finalised_wrappers() -> None:
    body = {
        "scheduled": [event(delay=5)],
        "finalised": [
            {"delayed_event": event(delay_id="sent"), "outcome": "send", "reason": "delay",
             "event_id": "$e", "origin_server_ts": 9},
            {"delayed_event": event(delay_id="gone"), "outcome": "cancel", "reason": "action",
             "origin_server_ts": 9},
            {"delayed_event": event(delay_id="bad"), "outcome": "cancel", "reason": "error",
             "error": {"errcode": "M_FORBIDDEN"}, "origin_server_ts": 9},
        ],
        "next_batch": "b2",
    }  # fmt: skip
    events, next_batch = parse_delayed_events_page(body)
    assert [e.status for e in events] == [
        DelayedEventStatus.SCHEDULED,
        DelayedEventStatus.SENT,
        DelayedEventStatus.CANCELLED,
        DelayedEventStatus.FAILED,
    ]
    assert events[1].event_id == "$e"
    assert next_batch == "b2"


def test_empty_next_batch_means_no_more_pages() -> None:
    assert parse_delayed_events_page({"delayed_events": [], "next_batch": ""}) == ([], None)


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        "x",
        {k: v for k, v in BASE.items() if k != "delay_id"},
        {k: v for k, v in BASE.items() if k != "content"},
        event(content="not an object"),
        event(delay_ms="5"),
        event(delay_ms=True),
        event(room_id=5),
        event(finalised=[1]),
        event(error=5),
    ],
)
def test_malformed_events_are_refused(bad: object) -> None:
    with pytest.raises(MalformedAnswer):
        parse_delayed_event(bad)


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {},
        {"delayed_events": {}},
        {"delayed_events": [], "next_batch": 5},
        {"finalised": [5]},
        {"delayed_events": [5]},
    ],
)
def test_malformed_listings_are_refused(bad: object) -> None:
    with pytest.raises(MalformedAnswer):
        parse_delayed_events_page(bad)


def test_reprs_never_hold_the_whole_delay_id() -> None:
    parsed = parse_delayed_event(event())
    assert BASE["delay_id"] not in repr(parsed)
    assert "syd_ab…" in repr(parsed)
    assert str(parsed.delay_id) == BASE["delay_id"]
