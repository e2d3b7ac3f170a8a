"""One convention for durations, and typed arguments for switches.

Every duration of the API is a ``timedelta``. A bare number still works where it worked, in the
unit it always had there, with a ``DeprecationWarning`` that names that unit and the timedelta to
write. A switch too short to be kept alive over a network, a restart interval that could not keep
it, and an argument of ``add()`` or ``dead_mans_switch()`` of the wrong type are refused with
``InvalidInput`` before anything is sent. The command line takes durations with a unit only.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import inspect
import re
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nio_delayed import (
    AliveEvent,
    Backoff,
    Capacity,
    DelayedAsyncClient,
    DelayedEventsMixin,
    ExitPolicy,
    InvalidInput,
    KeepAliveManager,
    RequestPolicy,
    RoomSendDelayedResponse,
    SwitchState,
)
from nio_delayed.cli import main
from nio_delayed.cli.common import parse_duration
from nio_delayed.devserver import DevServer
from nio_delayed.testing import FakeClock, FakeHomeserver
from nio_delayed.validation import Seconds

from .conftest import fake_client

ROOM = "!room:fake"
OFFLINE = {"msgtype": "m.notice", "body": "bot offline"}
NOWHERE = "http://127.0.0.1:9"  # nothing listens: a request sent by mistake fails loudly


@pytest.fixture
async def server() -> AsyncIterator[FakeHomeserver]:
    async with FakeHomeserver(clock=FakeClock(), sticky=True) as fake:
        yield fake


@pytest.fixture
async def client(server: FakeHomeserver) -> AsyncIterator[DelayedAsyncClient]:
    client = await fake_client(server)
    assert server.clock is not None
    client.keep_alive.clock = server.clock
    yield client
    await client.close()


def offline_client() -> DelayedAsyncClient:
    client = DelayedAsyncClient(NOWHERE, "@bot:fake")
    client.restore_login("@bot:fake", "DEVICE", "token")
    return client


# -- a bare number: its old unit, and a warning that says what to write ----------------------


def capacity() -> Capacity:
    return Capacity(0.9, 0.0, 0.0, 1.0, 0, (), 0, None, 0.0)


@pytest.mark.parametrize(
    ("bare", "read_as", "says"),
    [
        (
            lambda: RequestPolicy(timeout=2).timeout,
            RequestPolicy(timeout=timedelta(seconds=2)).timeout,
            "timeout=2 is read as 2 s",
        ),
        (
            lambda: RequestPolicy(max_retry_after=0.5).max_retry_after,
            RequestPolicy(max_retry_after=timedelta(milliseconds=500)).max_retry_after,
            "write max_retry_after=timedelta(milliseconds=500)",
        ),
        (
            lambda: RequestPolicy(backoff_initial=1).backoff_initial,
            1.0,
            "write backoff_initial=timedelta(seconds=1)",
        ),
        (
            lambda: RequestPolicy(backoff_max=90).backoff_max,
            90.0,
            "write backoff_max=timedelta(seconds=90)",
        ),
        (lambda: Backoff(initial=0.1).initial, 0.1, "initial=0.1 is read as 0.1 s"),
        (lambda: Backoff(maximum=60).maximum, 60.0, "write maximum=timedelta(minutes=1)"),
        (
            lambda: KeepAliveManager(offline_client(), request_timeout=5).request_timeout,
            5.0,
            "request_timeout=5 is read as 5 s",
        ),
        (
            lambda: KeepAliveManager(offline_client(), stall_threshold=2).stall_threshold,
            2.0,
            "write stall_threshold=timedelta(seconds=2)",
        ),
        (
            lambda: KeepAliveManager(offline_client(), stop_timeout=3600) and True,
            True,
            "write stop_timeout=timedelta(hours=1)",
        ),
        (
            lambda: DevServer(startup_timeout=120).startup_timeout,
            DevServer(startup_timeout=timedelta(minutes=2)).startup_timeout,
            "write startup_timeout=timedelta(minutes=2)",
        ),
        (
            lambda: capacity().max_switches(30),
            capacity().max_switches(timedelta(seconds=30)),
            "delay=30 is read as 30 s",
        ),
        (
            lambda: capacity().more_switches(30),
            capacity().more_switches(timedelta(seconds=30)),
            "write delay=timedelta(seconds=30)",
        ),
    ],
)
def test_a_bare_number_is_read_as_before_with_a_warning(
    bare: Callable[[], object], read_as: object, says: str
) -> None:
    with pytest.warns(DeprecationWarning, match=re.escape(says)) as caught:
        assert bare() == read_as
    assert "refused in 1.0" in str(caught[0].message)
    # Pointed at the caller's line, where the number is, not at the library.
    assert caught[0].filename == __file__


async def test_a_bare_delay_is_milliseconds_and_a_bare_interval_seconds(
    client: DelayedAsyncClient, server: FakeHomeserver
) -> None:
    with pytest.warns(DeprecationWarning, match="a bare number is deprecated") as caught:
        switch = await client.keep_alive.add(
            ROOM, "m.room.message", OFFLINE, delay=30_000, restart_interval=5, sticky_duration=2000
        )
    assert (switch.delay, switch.restart_interval) == (timedelta(seconds=30), timedelta(seconds=5))
    assert [str(w.message).split(":")[0] for w in caught] == [
        "delay=30000 is read as 30000 ms",
        "restart_interval=5 is read as 5 s",
        "sticky_duration=2000 is read as 2000 ms",
    ]
    assert {w.filename for w in caught} == {__file__}
    with pytest.warns(DeprecationWarning, match=r"write delay=timedelta\(minutes=1\)") as caught:
        sent = await client.room_send_delayed(ROOM, "m.room.message", OFFLINE, 60_000)
    assert caught[0].filename == __file__
    assert isinstance(sent, RoomSendDelayedResponse)
    assert sent.delay_ms == 60_000
    with pytest.warns(DeprecationWarning, match="timeout=5 is read as 5 s"):
        assert await switch.wait_for(SwitchState.ARMED, timeout=5) is SwitchState.ARMED


async def test_timedeltas_raise_no_warning_anywhere(client: DelayedAsyncClient) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy = RequestPolicy(
            timeout=timedelta(seconds=3),
            max_retry_after=timedelta(seconds=1),
            backoff_initial=timedelta(milliseconds=100),
            backoff_max=timedelta(seconds=2),
        )
        # replace() gives every field back to the constructor: the seconds it holds pass.
        assert dataclasses.replace(policy, max_attempts=1).timeout == 3.0
        assert dataclasses.replace(Backoff()).initial == 0.25
        switch = await client.keep_alive.add(
            ROOM,
            "m.room.message",
            OFFLINE,
            delay=timedelta(seconds=30),
            restart_interval=timedelta(seconds=5),
        )
        await switch.wait_for(SwitchState.ARMED, timeout=timedelta(seconds=1))


# -- the shortest switch, and restart intervals that could not keep one ----------------------


@pytest.mark.parametrize(
    ("delay", "says"),
    [
        (30, r"delay is 30 ms \(the bare number 30 is read as milliseconds\)"),
        (30, r"for 30 seconds write delay=timedelta\(seconds=30\)"),
        (timedelta(milliseconds=999), r"delay is 999 ms \(timedelta\(milliseconds=999\)\)"),
        (timedelta(milliseconds=999), "needs at least 1 s"),
    ],
)
async def test_a_switch_shorter_than_a_second_is_refused(
    client: DelayedAsyncClient, server: FakeHomeserver, delay: Any, says: str
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused, not warned about first
        with pytest.raises(InvalidInput, match=says):
            await client.keep_alive.add(ROOM, "m.room.message", OFFLINE, delay=delay)
        with pytest.raises(InvalidInput, match=says):
            async with client.dead_mans_switch(ROOM, "m.room.message", OFFLINE, delay=delay):
                pass
    assert server.requests == []


async def test_a_one_second_switch_and_a_short_reminder_are_accepted(
    client: DelayedAsyncClient,
) -> None:
    switch = await client.keep_alive.add(
        ROOM, "m.room.message", OFFLINE, delay=timedelta(seconds=1)
    )
    assert switch.restart_interval == timedelta(seconds=1) / 3
    # A reminder is never restarted: any positive delay goes.
    reminder = await client.room_send_delayed(
        ROOM, "m.room.message", OFFLINE, timedelta(milliseconds=30)
    )
    assert isinstance(reminder, RoomSendDelayedResponse)


@pytest.mark.parametrize(
    ("interval", "says"),
    [
        (timedelta(seconds=30), r"restart_interval \(30 s\) must be below the delay \(30 s\)"),
        (timedelta(minutes=5), "must be below the delay"),
        (45, r"restart_interval \(45 s\) must be below the delay"),
        (timedelta(milliseconds=99), r"at least timedelta\(milliseconds=100\)"),
        (timedelta(0), "restart_interval must be at least"),
        (-1, "restart_interval must be at least"),
        (float("nan"), "restart_interval must be finite"),
        ("10s", "restart_interval must be a datetime.timedelta"),
    ],
)
async def test_a_restart_interval_that_cannot_keep_the_switch_is_refused(
    client: DelayedAsyncClient, server: FakeHomeserver, interval: Any, says: str
) -> None:
    with pytest.raises(InvalidInput, match=says):
        await client.keep_alive.add(
            ROOM,
            "m.room.message",
            OFFLINE,
            delay=timedelta(seconds=30),
            restart_interval=interval,
        )
    assert server.requests == []


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda c: KeepAliveManager(c, request_timeout=timedelta(0)), "above 0"),
        (lambda c: KeepAliveManager(c, request_timeout=timedelta(hours=2)), "at most"),
        (lambda c: KeepAliveManager(c, stall_threshold=float("inf")), "finite"),
        (lambda c: KeepAliveManager(c, stop_timeout="30"), "datetime.timedelta"),  # type: ignore[arg-type]
        (lambda c: KeepAliveManager(c, max_in_flight=2.5), "max_in_flight must be an int"),  # type: ignore[arg-type]
        (lambda c: Backoff(initial=timedelta(0)), "initial must be above 0"),
        (lambda c: RequestPolicy(timeout=timedelta(seconds=-1)), "timeout must be above 0"),
        # Seconds a policy already holds are checked again when given back (replace()).
        (lambda c: RequestPolicy(timeout=Seconds(float("nan"))), "timeout must be finite"),
    ],
)
def test_durations_out_of_range_are_refused(
    make: Callable[[DelayedAsyncClient], object], says: str
) -> None:
    with pytest.raises(InvalidInput, match=says):
        make(offline_client())


def test_a_zero_stop_timeout_and_zero_waits_are_allowed() -> None:
    KeepAliveManager(offline_client(), stop_timeout=timedelta(0))
    policy = RequestPolicy(max_retry_after=timedelta(0), backoff_initial=timedelta(0))
    assert (policy.max_retry_after, policy.backoff_initial) == (0.0, 0.0)


# -- add() and dead_mans_switch(): typed options, checked -------------------------------------


def test_dead_mans_switch_takes_the_options_of_add() -> None:
    """So a misspelt option fails in a type checker, and the two cannot drift apart."""
    add = inspect.signature(KeepAliveManager.add).parameters
    switch = inspect.signature(DelayedEventsMixin.dead_mans_switch).parameters
    assert list(switch.values())[1:] == list(add.values())[1:]
    assert not any(p.kind is p.VAR_KEYWORD for p in switch.values())


GOOD: dict[str, Any] = {
    "room_id": ROOM,
    "event_type": "m.room.message",
    "content": OFFLINE,
    "delay": timedelta(seconds=30),
}

WRONG = [
    ("room_id", None),
    ("room_id", b"!room:fake"),
    ("event_type", 1),
    ("content", ["a", "list"]),
    ("content", "text"),
    ("delay", 30.0),
    ("delay", "30s"),
    ("delay", True),
    ("state_key", 0),
    ("restart_interval", "5"),
    ("alive", {"event_type": "org.example.status"}),
    ("alive", AliveEvent("org.example.status", ["not", "an", "object"])),  # type: ignore[arg-type]
    ("on_exit", "explode"),
    ("on_exit", 1),
    ("on_lost", None),
    ("on_leftover", True),
    ("on_overwrite", ExitPolicy.SEND),
    ("key", 7),
    ("key", None),
    ("ignore_unverified_devices", "yes"),
    ("ignore_unverified_devices", 1),
    ("priority", 1.5),
    ("priority", True),
    ("priority", "high"),
    ("sticky_duration", 1.5),
]


def _names(name: str) -> str:
    # Ids and content name themselves; the event type, as "event_type" too.
    return "alive|event_type|content" if name == "alive" else name


@pytest.mark.parametrize(("name", "value"), WRONG, ids=[f"{n}={v!r}" for n, v in WRONG])
async def test_a_wrong_type_is_refused_by_name_before_anything_is_sent(
    client: DelayedAsyncClient, server: FakeHomeserver, name: str, value: Any
) -> None:
    arguments = {**GOOD, name: value}
    with pytest.raises(InvalidInput, match=_names(name)):
        await client.keep_alive.add(**arguments)
    with pytest.raises(InvalidInput, match=_names(name)):
        async with client.dead_mans_switch(**arguments):
            pass
    assert server.requests == []


# What each option accepts (by type; a value of the right type may still be refused).
ACCEPTS: dict[str, Callable[[object], bool]] = {
    "room_id": lambda v: isinstance(v, str),
    "event_type": lambda v: isinstance(v, str),
    "content": lambda v: isinstance(v, dict),
    "delay": lambda v: isinstance(v, (timedelta, int)) and not isinstance(v, bool),
    "state_key": lambda v: v is None or isinstance(v, str),
    "restart_interval": lambda v: (
        v is None or (isinstance(v, (timedelta, int, float)) and not isinstance(v, bool))
    ),
    "alive": lambda v: v is None or isinstance(v, AliveEvent),
    "on_exit": lambda v: isinstance(v, str),
    "on_lost": lambda v: isinstance(v, str),
    "on_leftover": lambda v: isinstance(v, str),
    "on_overwrite": lambda v: isinstance(v, str),
    "key": lambda v: isinstance(v, str),
    "ignore_unverified_devices": lambda v: isinstance(v, bool),
    "priority": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "sticky_duration": lambda v: (
        v is None or (isinstance(v, (timedelta, int)) and not isinstance(v, bool))
    ),
}
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=10),
    st.binary(max_size=10),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.tuples(st.integers()),
    st.builds(object),
    st.timedeltas(),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(ACCEPTS)), values)
def test_any_value_of_a_wrong_type_raises_invalid_input(name: str, value: object) -> None:
    """Never a TypeError or AttributeError from inside, whatever the option and the value."""
    if ACCEPTS[name](value):
        return
    manager = KeepAliveManager(offline_client())
    adding: Awaitable[object] = manager.add(**{**GOOD, name: value})
    with pytest.raises(InvalidInput):
        asyncio.run(adding)  # type: ignore[arg-type]


# -- the command line: a unit, always ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1500ms", timedelta(milliseconds=1500)),
        ("30s", timedelta(seconds=30)),
        ("2.5s", timedelta(milliseconds=2500)),
        ("2m", timedelta(minutes=2)),
        (" 1h ", timedelta(hours=1)),
    ],
)
def test_cli_durations_take_their_unit(text: str, value: timedelta) -> None:
    assert parse_duration(text) == value


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("30", "'30' has no unit: write 30s for seconds or 30ms for milliseconds"),
        ("2.5", "write 2.5s for seconds"),
        ("0s", "must be positive"),
        ("30 sec", "is not a duration"),
        ("-1s", "is not a duration"),
    ],
)
def test_cli_durations_without_a_unit_are_refused_with_a_hint(text: str, says: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=says):
        parse_duration(text)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--homeserver", NOWHERE, "--user-id", "@bot:fake", "--access-token", "t",
         "--room", ROOM, "--type", "m.room.message", "--content", "{}", "--delay", "500ms",
         "--", "true"],
        ["demo", "--delay", "500ms"],
    ],
)  # fmt: skip
def test_cli_refuses_a_switch_shorter_than_a_second(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert refused.value.code == 2
    assert "'500ms' is too short for a dead-man's switch: at least 1s" in capsys.readouterr().err
