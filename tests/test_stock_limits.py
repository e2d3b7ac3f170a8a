"""The keep-alive on Synapse with its DEFAULT rate limits, both generations: ``rc_message`` (0.2/s,
burst 10) for scheduling and firing, ``rc_delayed_event_mgmt`` (1/s, burst 5) for restarts.

``make test`` runs a short form of each scenario; ``make soak`` (NIO_DELAYED_SOAK=1) the long
one, whose figures RELIABILITY.md reports (build/reliability.json).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from nio_delayed import (
    DelayedAsyncClient,
    DelayedEventsListResponse,
    ExitPolicy,
    KeepAliveManager,
    SwitchEvent,
    SwitchEventKind,
    SwitchState,
)
from nio_delayed.devserver import DevServer
from nio_delayed.testing import FaultProxy, ProxiedRequest

from .conftest import RESULTS, Room, make_room
from .test_keepalive_synapse import BotProcess

pytestmark = pytest.mark.synapse

SOAK = bool(os.environ.get("NIO_DELAYED_SOAK"))
#: The short form keeps deadlines short so that a few of them pass in seconds.
DELAY = 30.0 if SOAK else 12.0
RUN = 300.0 if SOAK else 3 * DELAY
OFFLINE = {"msgtype": "m.notice", "body": "bot offline"}
BOT = Path(__file__).parent / "bot_process.py"


@pytest.fixture
async def watched(
    stock_synapse: DevServer,
) -> AsyncIterator[tuple[Room, FaultProxy, DelayedAsyncClient]]:
    """A fresh room (fresh users: full buckets), the bot logged in through a proxy that only
    watches the traffic."""
    async for room in make_room(stock_synapse):
        async with FaultProxy(stock_synapse.url) as proxy:
            bot = DelayedAsyncClient(proxy.url, room.bot.user_id)
            bot.restore_login(room.bot.user_id, room.bot.device_id, room.bot.access_token)
            try:
                yield room, proxy, bot
            finally:
                await bot.close()


async def fired(room: Room) -> int:
    return sum(
        1
        for e in await room.messages("m.room.message")
        if e["content"].get("body") == OFFLINE["body"]
    )


def management(proxy: FaultProxy, since: float = 0.0) -> list[ProxiedRequest]:
    return [
        r
        for r in proxy.requests
        if r.method == "POST" and "delayed_events" in r.path and r.started >= since
    ]


def record(scenario: str, room: Room, **figures: object) -> None:
    key = f"{scenario}{' (soak)' if SOAK else ''}"
    RESULTS.setdefault(key, {})[room.server.version] = figures  # type: ignore[index]


async def arm(manager: KeepAliveManager, room: Room, count: int) -> list[object]:
    return [
        await manager.add(
            room.room_id, "m.room.message", OFFLINE, delay=timedelta(seconds=DELAY), key=f"s{n}",
            on_exit=ExitPolicy.CANCEL,
        )
        for n in range(count)
    ]  # fmt: skip


async def test_a_switches_at_90_percent_of_capacity_never_fire(
    watched: tuple[Room, FaultProxy, DelayedAsyncClient],
) -> None:
    room, proxy, bot = watched
    events: list[SwitchEvent] = []
    async with KeepAliveManager(bot) as manager:
        manager.on_event(events.append)
        capacity = manager.capacity().max_switches(timedelta(seconds=DELAY))
        count = math.floor(0.9 * capacity)
        switches = await arm(manager, room, count)
        started = time.monotonic()
        await asyncio.sleep(RUN)
        states = {s.state for s in switches}
        stats = manager.stats()
    requests = management(proxy)
    limited = [r for r in requests if r.status == 429]
    lost = await fired(room)
    record(
        "a 90% of capacity", room, delay_s=DELAY, seconds=RUN, capacity=capacity,
        switches=count, restarts_ok=stats.restarts_ok, requests=len(requests),
        answered_429=len(limited), share_429=round(len(limited) / max(1, len(requests)), 4),
        fired_while_alive=lost, min_margin_s=round(stats.min_margin or 0, 2),
        restarts_per_s=round(stats.restarts_ok / (time.monotonic() - started), 3),
    )  # fmt: skip
    assert count >= 5, capacity
    assert lost == 0
    assert states == {SwitchState.ARMED}
    assert not [e for e in events if e.kind is SwitchEventKind.OVER_BUDGET]
    assert len(limited) <= 0.02 * len(requests)


async def test_b_switches_at_160_percent_are_told_before_any_deadline_and_the_rest_kept(
    watched: tuple[Room, FaultProxy, DelayedAsyncClient],
) -> None:
    room, proxy, bot = watched
    events: list[tuple[float, SwitchEvent]] = []
    async with KeepAliveManager(bot) as manager:
        manager.on_event(lambda e: events.append((time.monotonic(), e)))
        capacity = manager.capacity().max_switches(timedelta(seconds=DELAY))
        count = math.ceil(1.6 * capacity)
        switches, added_at = [], {}
        for n in range(count):  # arming takes a while: Synapse schedules 0.2 a second
            switch = await manager.add(
                room.room_id, "m.room.message", OFFLINE, delay=timedelta(seconds=DELAY),
                key=f"s{n}", on_exit=ExitPolicy.CANCEL,
            )  # fmt: skip
            switches.append(switch)
            added_at[id(switch)] = time.monotonic()
        at_risk = set(map(id, manager.capacity().at_risk))
        steady = time.monotonic()
        await asyncio.sleep(RUN)
        ended = time.monotonic()
        kept = [s for s in switches if id(s) not in at_risk]
        kept_losses = sum(s.stats.losses for s in kept)
        kept_states = {s.state for s in kept}
    told: dict[int, float] = {}
    for at, event in events:
        if event.kind is SwitchEventKind.OVER_BUDGET:
            told.setdefault(id(event.switch), at)
    # While the switches run, the management requests are their restarts (older Synapse takes
    # the action in the body, so the path does not say).
    restarts = management(proxy, since=steady)
    confirmed = sum(1 for r in restarts if r.status == 200)
    limited = sum(1 for r in management(proxy) if r.status == 429)
    rate = confirmed / (ended - steady)
    record(
        "b 160% of capacity", room, delay_s=DELAY, seconds=RUN, capacity=capacity,
        switches=count, at_risk=len(at_risk), told_over_budget=len(told),
        arming_s=round(max(added_at.values()) - min(added_at.values()), 1),
        confirmed_restarts_per_s=round(rate, 3), answered_429=limited, kept_losses=kept_losses,
    )  # fmt: skip
    assert len(at_risk) == count - capacity
    # Each switch beyond the budget is told so by the time add() returns: before its first
    # deadline could pass (and the switches that fit are never the ones at risk).
    assert set(told) == at_risk
    assert all(told[key] <= added_at[key] for key in at_risk)
    assert kept_losses == 0
    assert kept_states == {SwitchState.ARMED}
    assert rate >= 0.9 * 1.0  # Synapse's rc_delayed_event_mgmt: 1 a second


async def test_c_a_clean_close_under_limits_lets_nothing_fire(
    watched: tuple[Room, FaultProxy, DelayedAsyncClient],
) -> None:
    room, proxy, bot = watched
    manager = KeepAliveManager(bot)
    await arm(manager, room, 10)
    await asyncio.sleep(DELAY / 2)
    closing = time.monotonic()
    unfinished = await manager.close()
    took = time.monotonic() - closing
    await asyncio.sleep(DELAY + 3)
    lost = await fired(room)
    listing = await room.bot.delayed_events()
    assert isinstance(listing, DelayedEventsListResponse), listing
    cancels = management(proxy, since=closing)
    record(
        "c clean close", room, switches=10, close_s=round(took, 2), cancel_requests=len(cancels),
        answered_429=sum(1 for r in cancels if r.status == 429),
        fired_after_close=lost, left_scheduled=len(listing.scheduled),
    )  # fmt: skip
    assert unfinished == []
    assert lost == 0
    assert listing.scheduled == []


async def test_d_a_killed_bot_delivers_what_the_library_predicted(
    stock_synapse: DevServer,
) -> None:
    """Fired events go through the account's message limit (rc_message), which drops the ones
    over it: the library says beforehand how many of 15 would arrive."""
    count = 15
    async for room in make_room(stock_synapse):
        bot = BotProcess(room, int(DELAY * 1000), "synapse", str(count))
        try:
            report = await bot.wait_for("capacity", timeout=120)
            warned = any(line["kind"] == SwitchEventKind.UNDELIVERABLE.value for line in bot.lines)
            bot.kill()
        finally:
            bot.close()
        await asyncio.sleep(DELAY + 5)
        arrived = await fired(room)
        predicted = int(report["deliverable"])
        record(
            "d killed with 15 switches", room, switches=count, predicted=predicted,
            arrived=arrived, warned=warned,
        )  # fmt: skip
        assert warned == (predicted < count)
        assert abs(arrived - predicted) <= 1
