"""Whatever a caller passes, the checks answer with the documented InvalidInput, and what they
let through is a request that goes where it means to, with a body a server can read."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from nio_delayed import ExitPolicy, LostPolicy, RequestPolicy
from nio_delayed.request_builders import (
    DelayedEventAction,
    event_request,
    lookup_request,
    schedule_request,
    state_event_request,
    update_request,
)
from nio_delayed.support import Dialect, ManagementForm
from nio_delayed.validation import (
    EVENT_ENVELOPE_BYTES,
    MAX_CONTENT_BYTES,
    MAX_EVENT_BYTES,
    MAX_JSON_DEPTH,
    MAX_JSON_INT,
    InvalidInput,
    check_content,
    check_delay_id,
    check_event,
    check_state_key,
    check_txn_id,
    coerce_policy,
)

HS = "https://hs.example"
LONE_SURROGATE = "\ud800"

# Text of every kind: lone surrogates, controls, dots, slashes, percent signs, non-ASCII.
hostile_text = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from([".", "%", "2", "E", "e", "/", "?", "#", " ", "\ud800"])),
    st.sampled_from([".", "..", "%2E", "%2e%2E", ".%2E", "..%2F", "a/../b", LONE_SURROGATE, ""]),
)
anything = st.one_of(
    hostile_text,
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.binary(max_size=4),
)
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(),
    hostile_text,
)
contents = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children),
        st.dictionaries(st.one_of(hostile_text, st.integers(), st.none()), children, max_size=3),
    ),
    max_leaves=12,
)


def _segments(path: str) -> list[str]:
    """The path a server receives after the URL library has had it, as decoded segments."""
    return [unquote(part) for part in URL(HS + path).raw_path.split("/")]


def _assert_sendable(path: str, body: dict[str, Any] | None, *names: str) -> None:
    """The URL library keeps every segment (it may decode a character the server decodes
    anyway), each name arrives whole, and the body encodes."""
    built = path.split("?")[0]
    segments = _segments(built)
    assert segments == [unquote(part) for part in built.split("/")]
    for name in names:
        assert name in segments
    if body is not None:
        json.dumps(body, ensure_ascii=False, allow_nan=False).encode()


@settings(max_examples=300)
@given(anything, anything, st.one_of(contents, anything), st.one_of(st.none(), anything))
def test_event_checks_refuse_only_with_invalid_input_and_pass_only_sendable_events(
    room_id: Any, event_type: Any, content: Any, state_key: Any
) -> None:
    try:
        room, etype, checked, key = check_event(room_id, event_type, content, state_key)
    except InvalidInput:
        return
    for dialect in Dialect:
        request = schedule_request(dialect, room, etype, checked, 1000, txn_id="t", state_key=key)
        _assert_sendable(request.path, request.body, room, etype, *([key] if key else []))
    request = event_request(room, etype, checked, txn_id="t", state_key=key)
    _assert_sendable(request.path, request.body, room, etype)


@given(anything)
def test_delay_ids_refused_or_addressed_exactly(delay_id: Any) -> None:
    try:
        checked = check_delay_id(delay_id)
    except InvalidInput as exc:
        refusal = str(exc)
        # A secret is not echoed (a short one is found in any sentence).
        assert not isinstance(delay_id, str) or len(delay_id) < 8 or delay_id not in refusal
        return
    for dialect in Dialect:
        _assert_sendable(lookup_request(dialect, checked).path, None, checked)
        for form in ManagementForm:
            request = update_request(dialect, checked, DelayedEventAction.RESTART, form)
            _assert_sendable(request.path, request.body, checked)


@given(anything)
def test_txn_ids_and_state_keys_refused_or_addressed_exactly(value: Any) -> None:
    for check in (check_txn_id, check_state_key):
        try:
            checked = check(value)
        except InvalidInput:
            continue
        request = state_event_request("!r:x", "m.t", checked)
        _assert_sendable(request.path, None, checked)


@pytest.mark.parametrize("dots", [".", ".."])
def test_dot_segments_are_refused_everywhere_they_would_be_resolved(dots: str) -> None:
    for check in (check_txn_id, check_state_key, check_delay_id):
        with pytest.raises(InvalidInput, match="another endpoint"):
            check(dots)
    with pytest.raises(InvalidInput, match="another endpoint"):
        check_event("!r:x", dots, {})
    # Encoded forms are a caller's literal text: they are sent encoded, and arrive as written.
    for literal in ("%2E", "%2E%2E", ".%2e"):
        path = state_event_request("!r:x", literal, check_state_key(literal)).path
        assert _segments(path.split("?")[0])[-2:] == [literal, literal]


@pytest.mark.parametrize("dots", [".", ".."])
def test_request_builders_never_put_a_dot_segment_on_the_wire(dots: str) -> None:
    with pytest.raises(ValueError, match="another endpoint"):
        state_event_request("!r:x", "m.t", dots)


# -- content ------------------------------------------------------------------------------------


@settings(max_examples=300)
@given(contents)
def test_content_is_refused_or_encodes_to_canonical_json_within_the_limit(content: Any) -> None:
    try:
        checked = check_content({"v": content})
    except InvalidInput:
        return
    encoded = json.dumps(checked, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    assert len(encoded.encode()) <= MAX_CONTENT_BYTES
    assert json.loads(encoded) == json.loads(json.dumps(checked))  # nothing lost or merged


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ({LONE_SURROGATE: 1}, "cannot be encoded"),
        ({"a": LONE_SURROGATE}, "cannot be encoded"),
        ({"a": [{"b": "x" + LONE_SURROGATE}]}, "cannot be encoded"),
        ({1: "a", "1": "b"}, "not a str"),  # json.dumps would make the two keys one
        ({"a": {None: 1}}, "not a str"),
        ({"a": {(1, 2): 1}}, "not a str"),
        ({"a": float("inf")}, "integers only"),
        ({"a": [float("-inf")]}, "integers only"),
        ({"a": 1.5}, "integers only"),
        ({"a": MAX_JSON_INT + 1}, "outside"),
        ({"a": -MAX_JSON_INT - 1}, "outside"),
        ({"a": 10**5000}, "outside"),  # beyond what int() may even print
        ({"a": b"bytes"}, "not JSON-serialisable"),
        ({"a": timedelta(1)}, "not JSON-serialisable"),
    ],
)
def test_content_canonical_json_cannot_carry_is_refused(content: object, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        check_content(content)


def test_content_at_the_integer_limits_is_accepted() -> None:
    content = {"a": MAX_JSON_INT, "b": -MAX_JSON_INT, "c": [True, None, "é"], "d": ()}
    assert check_content(content) == content


def _nested(depth: int) -> dict[str, Any]:
    content: dict[str, Any] = {}
    for _ in range(depth - 1):
        content = {"a": content}
    return content


def test_deep_nesting_is_refused_at_any_depth_without_recursion() -> None:
    assert check_content(_nested(MAX_JSON_DEPTH))
    for depth in (MAX_JSON_DEPTH + 1, 10_000, 200_000):
        with pytest.raises(InvalidInput, match="nested deeper"):
            check_content(_nested(depth))
    deep_list: list[Any] = []
    for _ in range(50_000):
        deep_list = [deep_list]
    with pytest.raises(InvalidInput, match="nested deeper"):
        check_content({"a": deep_list})


def test_content_that_contains_itself_is_refused() -> None:
    content: dict[str, Any] = {}
    content["self"] = content
    with pytest.raises(InvalidInput, match="nested deeper"):
        check_content(content)


def test_content_limit_leaves_room_for_the_whole_event() -> None:
    # Measured on Synapse 1.163: content of 64 973 bytes in a message was accepted when
    # scheduled, and the event was then never sent; the envelope there was 564 bytes.
    assert MAX_CONTENT_BYTES + EVENT_ENVELOPE_BYTES == MAX_EVENT_BYTES == 65_536
    assert EVENT_ENVELOPE_BYTES >= 4 * 255 + 10 * 47 + 644  # the names at their longest
    fits = {"body": "a" * (MAX_CONTENT_BYTES - len('{"body":""}'))}
    assert check_content(fits) == fits
    with pytest.raises(InvalidInput, match="fit in an event"):
        check_content({"body": "a" * (MAX_CONTENT_BYTES - len('{"body":""}') + 1)})
    with pytest.raises(InvalidInput, match="fit in an event"):
        check_content({"body": "a" * 64_000})  # under 64 KiB, yet the event would not fit
    # Bytes, not characters: "é" is two bytes of UTF-8.
    with pytest.raises(InvalidInput, match="fit in an event"):
        check_content({"body": "é" * (MAX_CONTENT_BYTES // 2)})


@pytest.mark.parametrize(
    "ids",
    [
        ("!r" + LONE_SURROGATE + ":x", "m.t", ""),
        ("!r:x", "m.t" + LONE_SURROGATE, ""),
        ("!r:x", "m.t", LONE_SURROGATE),
    ],
)
def test_ids_that_cannot_be_encoded_are_refused(ids: tuple[str, str, str]) -> None:
    room_id, event_type, state_key = ids
    with pytest.raises(InvalidInput):
        check_event(room_id, event_type, {}, state_key)
    for check in (check_txn_id, check_delay_id):
        with pytest.raises(InvalidInput):
            check(LONE_SURROGATE)


# -- policies passed as strings -----------------------------------------------------------------


def test_a_policy_given_as_its_value_is_that_member() -> None:
    assert coerce_policy(ExitPolicy, "send", "on_exit") is ExitPolicy.SEND
    assert coerce_policy(ExitPolicy, ExitPolicy.KEEP, "on_exit") is ExitPolicy.KEEP
    for member in LostPolicy:
        assert coerce_policy(LostPolicy, member.value, "on_lost") is member


@pytest.mark.parametrize(
    "value", ["SEND", "Send", " send", "sent", "", None, 1, True, LostPolicy.REARM]
)
def test_anything_else_is_refused_by_name(value: object) -> None:
    with pytest.raises(InvalidInput, match=r"on_exit must be one of 'send', .* \(the ExitPolicy"):
        coerce_policy(ExitPolicy, value, "on_exit")


# -- request policies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"timeout": math.nan},
        {"timeout": math.inf},
        {"timeout": 0},
        {"timeout": -1},
        {"timeout": 1e9},
        {"timeout": "10"},
        {"max_retry_after": math.nan},
        {"max_retry_after": math.inf},
        {"max_retry_after": 1e12},
        {"max_retry_after": -0.5},
        {"backoff_initial": math.nan},
        {"backoff_max": math.inf},
        {"max_attempts": 0},
        {"max_attempts": 2.5},
        {"max_attempts": True},
        {"max_attempts": 10**9},
    ],
)
def test_request_policies_that_could_hang_a_call_are_refused(fields: dict[str, Any]) -> None:
    name = next(iter(fields))
    with pytest.raises(ValueError, match=name) as caught:
        RequestPolicy(**fields)
    assert isinstance(caught.value, InvalidInput)


def test_ordinary_request_policies_are_accepted() -> None:
    RequestPolicy()
    RequestPolicy(
        timeout=timedelta(milliseconds=100),
        max_attempts=1,
        max_retry_after=timedelta(0),
        backoff_initial=timedelta(0),
    )
    RequestPolicy(
        timeout=timedelta(hours=1),
        max_attempts=100,
        max_retry_after=timedelta(hours=1),
        backoff_max=timedelta(hours=1),
    )
