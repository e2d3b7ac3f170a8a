"""MatrixRTC membership (``client.rtc_membership``) against the fake homeserver: the leave is
armed before the membership is published, the wire content of each mode, the leave on exit,
the refresh and the rejoin after a lost leave. The real-client proof is
tests/test_rtc_synapse.py."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from nio_delayed import (
    DelayedAsyncClient,
    InvalidInput,
    RtcMembership,
    RtcMode,
    SwitchState,
    UnsupportedServerError,
)
from nio_delayed.testing import FakeHomeserver, Fault

from .conftest import fake_client

ROOM = "!room:fake"
LEGACY_TYPE = "org.matrix.msc3401.call.member"
STICKY_TYPE = "org.matrix.msc4143.rtc.member"
STATE_KEY = "_@bot:fake_DEVICE_m.call"
STICKY_PARAM = "org.matrix.msc4354.sticky_duration_ms"
LIVEKIT = {"type": "livekit", "livekit_service_url": "https://sfu.example.org"}


@pytest.fixture
async def sticky_server() -> AsyncIterator[FakeHomeserver]:
    async with FakeHomeserver(sticky=True) as server:
        yield server


def sent_events(server: FakeHomeserver, event_type: str) -> list[dict[str, Any]]:
    return [e for e in server.room_events if e["type"] == event_type]


async def published(call: RtcMembership, times: int, timeout: float = 10.0) -> None:
    """Wait until the membership has been published ``times`` times."""
    for _ in range(int(timeout / 0.05)):
        if call.publications >= times:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"published {call.publications} times, not {times}, within {timeout} s")


def kinds(server: FakeHomeserver, since: int = 0) -> list[str]:
    """The requests that matter here, in order: schedule, publish, restart, cancel, send."""
    names = []
    for r in server.requests[since:]:
        if "/delayed_event/" in r.path:
            names.append("schedule")
        elif r.path.endswith(("/restart", "/cancel", "/send")):
            names.append(r.path.rsplit("/", 1)[1])
        elif "/rooms/" in r.path and r.method == "PUT":
            names.append("publish")
    return names


# -- legacy state mode ---------------------------------------------------------------------


async def test_legacy_mode_arms_an_empty_leave_then_publishes_the_membership(
    fake: FakeHomeserver,
) -> None:
    client = await fake_client(fake)
    async with client.rtc_membership(
        ROOM, mode="legacy", transports=[LIVEKIT], call_intent="audio", delay=timedelta(seconds=30)
    ) as call:
        assert call.mode is RtcMode.LEGACY
        assert call.state_key == STATE_KEY
        assert call.joined
        [leave] = fake.scheduled()
        assert leave["state_key"] == STATE_KEY
        assert leave["content"] == {}  # exactly: readers take only {} as a leave
        [member] = sent_events(fake, LEGACY_TYPE)
        assert member["state_key"] == STATE_KEY
        assert member["content"] == {
            "application": "m.call",
            "call_id": "",
            "scope": "m.room",
            "device_id": "DEVICE",
            "membershipID": "@bot:fake:DEVICE",
            "expires": 4 * 3600 * 1000,
            "focus_active": {"type": "livekit", "focus_selection": "oldest_membership"},
            "foci_preferred": [LIVEKIT],
            "m.call.intent": "audio",
        }
        assert kinds(fake) == ["schedule", "publish"]
    assert not call.joined
    # Leaving the block sends the leave now: the state is empty again.
    assert sent_events(fake, LEGACY_TYPE)[-1]["content"] == {}
    assert kinds(fake)[-1] == "send"
    assert fake.scheduled() == []
    await client.close()


async def test_auto_mode_is_legacy_without_sticky_events(fake: FakeHomeserver) -> None:
    client = await fake_client(fake)
    async with client.rtc_membership(ROOM) as call:
        assert call.mode is RtcMode.LEGACY
    await client.close()


# -- sticky mode ---------------------------------------------------------------------------


async def test_sticky_mode_arms_a_sticky_leave_then_publishes_a_sticky_membership(
    sticky_server: FakeHomeserver,
) -> None:
    client = await fake_client(sticky_server)
    async with client.rtc_membership(
        ROOM, transports=[LIVEKIT], delay=timedelta(seconds=30)
    ) as call:
        assert call.mode is RtcMode.STICKY  # AUTO, on a server with sticky events
        assert call.state_key is None
        member_id = call.member_id
        [schedule] = sticky_server.requests_to("/delayed_event/")
        assert STICKY_PARAM in schedule.path
        leave = schedule.body["content"]
        assert leave["member"] == {
            "id": member_id,
            "user_id": "@bot:fake",
            "device_id": "DEVICE",
            "membership": "leave",
        }
        assert leave["leave_reason"] == {"code": "delayed_leave"}
        assert "application" not in leave
        assert leave["msc4354_sticky_key"] == leave["sticky_key"] == member_id
        [member] = sent_events(sticky_server, STICKY_TYPE)
        assert member["msc4354_sticky"] == {"duration_ms": 3_600_000}
        content = member["content"]
        assert content["slot_id"] == "m.call#ROOM"
        assert content["application"] == {"type": "m.call"}
        assert content["member"]["membership"] == "join"
        assert content["member"]["id"] == member_id
        assert content["transports"] == {"published": [LIVEKIT], "can_subscribe": ["livekit"]}
        assert content["msc4354_sticky_key"] == content["sticky_key"] == member_id
        assert kinds(sticky_server) == ["schedule", "publish"]
    # A clean exit says so ("leave"), then cancels the delayed leave.
    last = sent_events(sticky_server, STICKY_TYPE)[-1]
    assert last["content"]["leave_reason"] == {"code": "leave"}
    assert last["content"]["member"]["membership"] == "leave"
    assert "msc4354_sticky" in last
    assert kinds(sticky_server)[-2:] == ["publish", "cancel"]
    assert sticky_server.scheduled() == []
    await client.close()


async def test_sticky_mode_on_a_server_without_sticky_events_sends_nothing(
    fake: FakeHomeserver,
) -> None:
    client = await fake_client(fake)
    with pytest.raises(UnsupportedServerError, match="sticky"):
        async with client.rtc_membership(ROOM, mode=RtcMode.STICKY):
            pass
    assert kinds(fake) == []
    await client.close()


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "sideways"},
        {"slot": "a#b"},
        {"application": ""},
        {"transports": [{"url": "no type"}]},
        {"delay": timedelta(seconds=0)},
        {"delay": timedelta(milliseconds=500)},  # under a dead-man's switch's minimum
        {"sticky_duration": timedelta(hours=2)},
    ],
)
async def test_bad_options_are_refused_before_anything_is_sent(
    sticky_server: FakeHomeserver, options: dict[str, Any]
) -> None:
    client = await fake_client(sticky_server)
    with pytest.raises(InvalidInput):
        async with client.rtc_membership(ROOM, **options):
            pass
    assert sticky_server.requests == []
    await client.close()


# -- keeping it ----------------------------------------------------------------------------


async def test_a_refresh_follows_a_confirmed_restart_of_the_leave(
    sticky_server: FakeHomeserver,
) -> None:
    """Stickiness of 1.2 s: the membership is sent again every 0.9 s, each time only after the
    leave (restarted every second) was restarted since the refresh fell due."""
    client = await fake_client(sticky_server)
    async with client.rtc_membership(
        ROOM,
        mode="sticky",
        delay=timedelta(seconds=3),
        sticky_duration=timedelta(milliseconds=1200),
    ) as call:
        await published(call, 4)
    order = kinds(sticky_server)
    publishes = [i for i, kind in enumerate(order) if kind == "publish"][:4]
    for earlier, later in itertools.pairwise(publishes):
        assert "restart" in order[earlier:later], order
    await client.close()


async def test_after_a_stall_the_leave_is_kept_before_the_membership_is_refreshed(
    sticky_server: FakeHomeserver,
) -> None:
    """The event loop stalls (a suspended host) past the leave's delay and the refresh: on
    wake the membership goes out only once the leave has been restarted, or re-armed if the
    server sent it (here the first restarts fail)."""
    client = await fake_client(sticky_server)
    async with client.rtc_membership(
        ROOM,
        mode="sticky",
        delay=timedelta(milliseconds=1500),
        sticky_duration=timedelta(seconds=2),
    ) as call:
        await asyncio.sleep(0.2)  # the refresh is waiting for its time
        mark = len(sticky_server.requests)
        sticky_server.inject(Fault(path_contains="/restart", status=503, times=2))
        time.sleep(3)  # noqa: ASYNC251  # the stall itself
        await published(call, 2)
        after = sticky_server.requests[mark:]
        publish = next(i for i, r in enumerate(after) if "/send/" in r.path)
        kept = [
            r
            for r in after[:publish]
            if (r.status == 200 and r.path.endswith("/restart")) or "/delayed_event/" in r.path
        ]
        assert kept, [(r.path[-30:], r.status) for r in after]
        assert call.switch.state is SwitchState.ARMED
    await client.close()


async def test_a_legacy_refresh_keeps_created_ts_and_lengthens_expires(
    fake: FakeHomeserver,
) -> None:
    client = await fake_client(fake)
    async with client.rtc_membership(
        ROOM, mode="legacy", delay=timedelta(seconds=3), expires=timedelta(milliseconds=1200)
    ) as call:
        await published(call, 2)
    first, second = (e["content"] for e in sent_events(fake, LEGACY_TYPE)[:2])
    assert "created_ts" not in first
    assert first["expires"] == 1200
    assert second["created_ts"] > 0
    assert second["expires"] > 1200 + 800  # counted from created_ts: ~0.9 s have passed
    await client.close()


async def test_a_fired_leave_is_rearmed_and_the_membership_published_again(
    sticky_server: FakeHomeserver,
) -> None:
    client = await fake_client(sticky_server)
    async with client.rtc_membership(
        ROOM, mode="sticky", delay=timedelta(milliseconds=1500)
    ) as call:
        [leave] = sticky_server.scheduled()
        sticky_server.fire(leave["delay_id"])  # as if the bot had been unreachable
        await published(call, 2)
        assert call.switch.stats.rearms == 1
        assert call.switch.state is SwitchState.ARMED
        contents = [e["content"] for e in sent_events(sticky_server, STICKY_TYPE)]
        assert [c["member"]["membership"] for c in contents] == ["join", "leave", "join"]
    await client.close()


async def test_two_memberships_of_one_slot_are_refused(fake: FakeHomeserver) -> None:
    client = await fake_client(fake)
    async with client.rtc_membership(ROOM, mode="legacy"):
        with pytest.raises(Exception, match="already guards"):
            async with client.rtc_membership(ROOM, mode="legacy"):
                pass
    await client.close()


async def test_a_client_without_a_device_id_is_refused(fake: FakeHomeserver) -> None:
    client = DelayedAsyncClient(fake.url, "@bot:fake")
    client.access_token = fake.add_user("@bot:fake")
    with pytest.raises(InvalidInput, match="device id"):
        async with client.rtc_membership(ROOM):
            pass
    assert fake.requests == []
    await client.close()


@pytest.mark.parametrize(
    ("application", "slot", "state_key", "slot_id"),
    [
        ("m.call", "ROOM", "_@bot:fake_DEVICE_m.call", "m.call#ROOM"),
        ("m.call", "standup", "_@bot:fake_DEVICE_m.callstandup", "m.call#standup"),
        ("org.example.game", "a", "_@bot:fake_DEVICE_org.example.gamea", "org.example.game#a"),
    ],
)
async def test_a_slot_names_the_state_key_and_the_call_id_as_element_call_does(
    fake: FakeHomeserver, application: str, slot: str, state_key: str, slot_id: str
) -> None:
    """The room's call is ``""`` in legacy state (``ROOM`` in sticky events); other slots keep
    their name."""
    client = await fake_client(fake)
    async with client.rtc_membership(
        ROOM, mode="legacy", application=application, slot=slot
    ) as call:
        assert call.state_key == state_key
        assert call.slot_id == slot_id
        content = call.membership_content()
        assert content["application"] == application
        assert content["call_id"] == ("" if slot_id == "m.call#ROOM" else slot)
    await client.close()
