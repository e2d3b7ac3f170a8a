"""Every request shape of the three MSC4140 dialects (docs/protocol.md, "Dialects"), built
without I/O."""

from __future__ import annotations

import pytest

from nio_delayed.request_builders import (
    DelayedEventAction,
    list_request,
    lookup_request,
    msc4486_list_request,
    probe_request,
    schedule_request,
    update_request,
)
from nio_delayed.support import Dialect, ManagementForm

ROOM = "!room:example.org"
CONTENT = {"body": "offline"}
UNSTABLE = "/_matrix/client/unstable/org.matrix.msc4140"
SECRET = "syd_abcdefghijklmnopqrst"


def test_legacy_message_uses_send_with_delay_query_and_content_as_body() -> None:
    req = schedule_request(Dialect.LEGACY, ROOM, "m.room.message", CONTENT, 5000, txn_id="t1")
    assert req.method == "PUT"
    assert req.path == (
        "/_matrix/client/v3/rooms/%21room%3Aexample.org/send/m.room.message/t1"
        "?org.matrix.msc4140.delay=5000"
    )
    assert req.body == CONTENT
    assert req.idempotent  # the transaction id makes a retry return the same delay_id


def test_legacy_state_uses_state_endpoint_and_is_not_retry_safe() -> None:
    req = schedule_request(
        Dialect.LEGACY, ROOM, "m.room.member", CONTENT, 10, txn_id="t", state_key="@bot:x"
    )
    assert req.path == (
        "/_matrix/client/v3/rooms/%21room%3Aexample.org/state/m.room.member/%40bot%3Ax"
        "?org.matrix.msc4140.delay=10"
    )
    assert req.body == CONTENT
    assert not req.idempotent  # /state has no transaction id: a retry schedules twice


def test_legacy_state_with_empty_state_key_keeps_the_trailing_slash() -> None:
    req = schedule_request(Dialect.LEGACY, ROOM, "m.room.topic", {}, 10, txn_id="t", state_key="")
    assert req.path.split("?")[0].endswith("/state/m.room.topic/")


@pytest.mark.parametrize(
    ("dialect", "prefix"),
    [(Dialect.UNSTABLE, UNSTABLE), (Dialect.STABLE, "/_matrix/client/v3")],
)
def test_merged_msc_message_goes_to_delayed_event_endpoint(dialect: Dialect, prefix: str) -> None:
    req = schedule_request(dialect, ROOM, "m.room.message", CONTENT, 5000, txn_id="t 1")
    assert req.method == "PUT"
    assert req.path == f"{prefix}/rooms/%21room%3Aexample.org/delayed_event/m.room.message/t%201"
    assert req.body == {"delay": 5000, "delay_ms": 5000, "content": CONTENT}
    assert "state_key" not in req.body
    assert req.idempotent


@pytest.mark.parametrize("dialect", [Dialect.UNSTABLE, Dialect.STABLE])
def test_merged_msc_state_event_adds_state_key_even_when_empty(dialect: Dialect) -> None:
    req = schedule_request(dialect, ROOM, "m.room.topic", CONTENT, 5, txn_id="t", state_key="")
    assert req.body is not None
    assert req.body["state_key"] == ""
    assert "/delayed_event/m.room.topic/t" in req.path
    assert req.idempotent


@pytest.mark.parametrize(
    ("dialect", "prefix"),
    [
        (Dialect.LEGACY, UNSTABLE),
        (Dialect.UNSTABLE, UNSTABLE),
        (Dialect.STABLE, "/_matrix/client/v1"),
    ],
)
@pytest.mark.parametrize("action", list(DelayedEventAction))
def test_path_form_management(dialect: Dialect, prefix: str, action: DelayedEventAction) -> None:
    req = update_request(dialect, SECRET, action, ManagementForm.PATH)
    assert (req.method, req.path, req.body) == (
        "POST",
        f"{prefix}/delayed_events/{SECRET}/{action.value}",
        {},
    )
    assert req.idempotent is (action is DelayedEventAction.RESTART)


@pytest.mark.parametrize("action", list(DelayedEventAction))
def test_body_form_management_of_older_synapse(action: DelayedEventAction) -> None:
    req = update_request(Dialect.LEGACY, SECRET, action, ManagementForm.BODY)
    assert (req.method, req.path, req.body) == (
        "POST",
        f"{UNSTABLE}/delayed_events/{SECRET}",
        {"action": action.value},
    )


def test_delay_id_is_encoded_in_paths_and_shortened_in_log_paths() -> None:
    req = update_request(Dialect.STABLE, "a/b?c", DelayedEventAction.CANCEL, ManagementForm.PATH)
    assert req.path == "/_matrix/client/v1/delayed_events/a%2Fb%3Fc/cancel"
    for req in (
        update_request(Dialect.LEGACY, SECRET, DelayedEventAction.SEND, ManagementForm.PATH),
        update_request(Dialect.LEGACY, SECRET, DelayedEventAction.SEND, ManagementForm.BODY),
        lookup_request(Dialect.STABLE, SECRET),
    ):
        assert SECRET in req.path
        assert SECRET not in req.log_path
        assert "syd_ab…" in req.log_path


@pytest.mark.parametrize(
    ("dialect", "path"),
    [
        (Dialect.LEGACY, f"{UNSTABLE}/delayed_events/{SECRET}"),
        (Dialect.UNSTABLE, f"{UNSTABLE}/delayed_events/{SECRET}"),
        (Dialect.STABLE, f"/_matrix/client/v1/delayed_events/{SECRET}"),
    ],
)
def test_lookup(dialect: Dialect, path: str) -> None:
    req = lookup_request(dialect, SECRET)
    assert (req.method, req.path, req.body) == ("GET", path, None)


def test_list_with_and_without_pagination_token() -> None:
    assert list_request(Dialect.LEGACY).path == f"{UNSTABLE}/delayed_events"
    assert list_request(Dialect.STABLE).path == "/_matrix/client/v1/delayed_events"
    assert list_request(Dialect.STABLE, "b 1").path == "/_matrix/client/v1/delayed_events?from=b+1"


def test_msc4486_listing_carries_its_filters() -> None:
    unstable = msc4486_list_request(stable=False)
    assert unstable.path == "/_matrix/client/unstable/org.matrix.msc4486/delayed_events"
    filtered = msc4486_list_request(
        stable=True, from_token="b 1", status="failed", room_id="!r:hs", event_type="m.x"
    )
    assert filtered.path == (
        "/_matrix/client/v1/delayed_events?status=failed&room_id=%21r%3Ahs&type=m.x&from=b+1"
    )


def test_probe_cannot_schedule_anything() -> None:
    req = probe_request("probe-1")
    assert req.method == "PUT"
    assert req.path.startswith(f"{UNSTABLE}/rooms/")
    assert "/delayed_event/" in req.path
    assert req.body == {}  # no delay and no content: a server that has the endpoint refuses it
