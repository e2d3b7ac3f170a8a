"""Cancellation and races in the keep-alive, against the fake homeserver: a cancelled ``add()``,
two ``add()`` of one event at once, ``close()`` during ``start()`` or ``add()``, and a restarted
process that takes back its leftovers while the server rate-limits.

Each request of an ``add()`` is held in turn (the server acts on it, then holds its answer) and
the caller cancelled while it waits for that answer; afterwards the server may hold no event that
no switch owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from nio_delayed import (
    AliveEvent,
    DeadMansSwitch,
    DelayedAsyncClient,
    ExitPolicy,
    KeepAliveError,
    KeepAliveManager,
    LeftoverPolicy,
    SwitchState,
)
from nio_delayed.testing import FakeClock, FakeHomeserver, Fault

from .conftest import fake_client

ROOM = "!room:fake"
OFFLINE = {"msgtype": "m.notice", "body": "bot offline"}
ALIVE = AliveEvent("org.example.status", {"online": True}, state_key="bot")
#: How long the server holds the request a test cancels on (real seconds).
HELD = 0.1


@dataclass
class Bot:
    server: FakeHomeserver
    client: DelayedAsyncClient
    manager: KeepAliveManager

    def fired(self) -> list[dict[str, Any]]:
        return [e for e in self.server.room_events if e["content"].get("body") == OFFLINE["body"]]

    def scheduled_ids(self) -> set[str]:
        return {e["delay_id"] for e in self.server.scheduled()}

    def owned_ids(self) -> set[str]:
        return {str(s.delay_id) for s in self.manager.switches}

    async def restart(self) -> None:
        """The process ends without ending its switches (as if killed); a new one starts."""
        user_id, token = self.client.user_id, self.client.access_token
        await self.manager.close()
        await self.client.close()
        self.client = DelayedAsyncClient(self.server.url, user_id)
        self.client.restore_login(user_id, "DEVICE", token)
        self.manager = KeepAliveManager(self.client, seed=2)


@pytest.fixture
async def bot() -> AsyncIterator[Bot]:
    async with FakeHomeserver(stable=True, unstable=False) as server:
        client = await fake_client(server)
        state = Bot(server, client, KeepAliveManager(client, seed=1))
        yield state
        await state.manager.close()
        await state.client.close()


def add(manager: KeepAliveManager, **options: Any) -> Awaitable[DeadMansSwitch]:
    options.setdefault("delay", timedelta(seconds=30))
    return manager.add(ROOM, "m.room.message", OFFLINE, **options)


async def requests_of_one_add(scenario: str) -> int:
    """How many requests a whole ``add()`` of ``scenario`` makes (on its own server)."""
    async with FakeHomeserver(stable=True, unstable=False) as server:
        client = await fake_client(server)
        state = Bot(server, client, KeepAliveManager(client, seed=1))
        await prepare(state, scenario)
        before = len(server.requests)
        await add(state.manager, **OPTIONS[scenario])
        count = len(server.requests) - before
        await state.manager.close()
        await state.client.close()
    return count


async def prepare(bot: Bot, scenario: str) -> None:
    """``leftover``: a previous process left the event scheduled (same content: adopted);
    ``changed``: it left one with other content (armed anew, then the leftover cancelled)."""
    if scenario == "fresh":
        return
    content = OFFLINE if scenario == "leftover" else {**OFFLINE, "v": 0}
    await bot.manager.add(
        ROOM, "m.room.message", content, delay=timedelta(seconds=30), on_exit=ExitPolicy.KEEP
    )
    await bot.restart()


OPTIONS: dict[str, dict[str, Any]] = {
    "fresh": {"alive": ALIVE},
    "leftover": {"alive": ALIVE},
    "changed": {"alive": ALIVE, "on_leftover": LeftoverPolicy.CANCEL},
}
#: The most requests one add() of these scenarios makes: support (2), listing, encryption check,
#: arm, cancel a leftover, alive.
MOST_REQUESTS = 7


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition()`` holds (what the fake server received)."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    pytest.fail("the condition never held")


async def cancel_while_held(bot: Bot, nth: int, start: Callable[[], Awaitable[Any]]) -> None:
    """Start ``start()``, hold the ``nth`` request it makes (0: the first) on the server and
    cancel the caller while it waits for that answer. The cancellation reaches the caller."""
    before = len(bot.server.requests)
    bot.server.inject(Fault(answer_latency=HELD, times=None))
    task = asyncio.ensure_future(start())
    await until(lambda: len(bot.server.requests) > before + nth or task.done())
    assert not task.done(), f"the call made fewer than {nth + 1} requests"
    bot.server.faults.clear()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("scenario", list(OPTIONS))
@pytest.mark.parametrize("nth", range(MOST_REQUESTS))
async def test_a_cancelled_add_leaves_no_event_that_no_switch_owns(
    bot: Bot, scenario: str, nth: int
) -> None:
    await prepare(bot, scenario)
    if nth >= await requests_of_one_add(scenario):
        pytest.skip(f"{scenario}: add() makes fewer than {nth + 1} requests")
    options = OPTIONS[scenario]
    await cancel_while_held(bot, nth, lambda: add(bot.manager, **options))
    assert bot.manager.switches == []
    if scenario == "fresh":
        assert bot.server.scheduled() == []
    # Leftovers not taken over stay for the next add() of the same event, which ends with its
    # one event scheduled, whatever the cancelled call had done.
    switch = await add(bot.manager, **options)
    assert bot.scheduled_ids() == {str(switch.delay_id)}
    assert bot.fired() == []
    assert switch.state is SwitchState.ARMED


@pytest.mark.parametrize("scenario", list(OPTIONS))
async def test_a_cancel_after_any_number_of_loop_turns_leaves_no_unowned_event(
    scenario: str,
) -> None:
    """The same, with the cancellation at any moment: after N turns of the event loop, for
    every other N from 0 until add() is done (whatever it was waiting for then; one request
    takes several turns)."""
    for turns in itertools.count(0, 2):
        async with FakeHomeserver(stable=True, unstable=False) as server:
            client = await fake_client(server)
            bot = Bot(server, client, KeepAliveManager(client, seed=1))
            await prepare(bot, scenario)
            task = asyncio.ensure_future(add(bot.manager, **OPTIONS[scenario]))
            for _ in range(turns):
                await asyncio.sleep(0)
            finished = task.done()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if not bot.manager.switches:
                await add(bot.manager, **OPTIONS[scenario])
            assert bot.scheduled_ids() == bot.owned_ids(), f"cancelled after {turns} turns"
            assert bot.fired() == []
            await bot.manager.close()
            await bot.client.close()
        if finished:
            break


async def test_a_cancelled_dead_mans_switch_block_leaves_nothing_scheduled(bot: Bot) -> None:
    entered = asyncio.Event()

    async def guarded() -> None:
        async with bot.client.dead_mans_switch(
            ROOM, "m.room.message", OFFLINE, delay=timedelta(seconds=30)
        ):
            entered.set()

    # The scheduling request: after support (2), listing and the encryption check.
    await cancel_while_held(bot, 4, guarded)
    assert not entered.is_set()
    assert bot.server.scheduled() == []
    assert bot.fired() == []


async def test_wait_for_an_add_that_times_out_leaves_nothing_scheduled(bot: Bot) -> None:
    bot.server.inject(Fault(path_contains="/delayed_event/", answer_latency=HELD))
    with pytest.raises(asyncio.TimeoutError):  # the builtin TimeoutError from 3.11 only
        await asyncio.wait_for(add(bot.manager), HELD / 2)
    assert bot.server.scheduled() == []
    assert bot.manager.switches == []


async def test_two_adds_of_one_event_at_once_make_one_switch(bot: Bot) -> None:
    results = await asyncio.gather(
        add(bot.manager, key="a"), add(bot.manager, key="a"), return_exceptions=True
    )
    switches = [r for r in results if isinstance(r, DeadMansSwitch)]
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(switches) == 1
    assert len(errors) == 1
    assert isinstance(errors[0], KeepAliveError)
    assert "already guards this event" in str(errors[0])
    assert len(bot.server.requests_to("/delayed_event/")) == 1  # the other sent nothing
    assert bot.scheduled_ids() == {str(switches[0].delay_id)}


async def test_two_adds_of_one_state_event_at_once_make_one_switch(bot: Bot) -> None:
    def status(online: bool) -> Awaitable[DeadMansSwitch]:
        return bot.manager.add(
            ROOM,
            "org.example.status",
            {"online": online},
            state_key="bot",
            delay=timedelta(seconds=30),
        )

    results = await asyncio.gather(status(False), status(True), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["DeadMansSwitch", "KeepAliveError"]
    assert len(bot.server.scheduled()) == 1


def keep_alive_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "nio-delayed keep-alive"]


@pytest.mark.parametrize("held", ["/versions", "/delayed_events"])
async def test_close_while_start_runs_leaves_no_task_and_add_says_closed(
    bot: Bot, held: str
) -> None:
    bot.server.inject(Fault(path_contains=held, latency=HELD))
    adding = asyncio.ensure_future(add(bot.manager))
    await until(lambda: bool(bot.server.requests_to(held)))
    assert await bot.manager.close() == []
    with pytest.raises(KeepAliveError, match="closed"):
        await adding
    assert keep_alive_tasks() == []
    assert bot.server.scheduled() == []
    with pytest.raises(KeepAliveError, match="closed"):
        await add(bot.manager, key="later")


async def test_close_while_the_first_add_arms_cancels_its_event_before_it_returns(
    bot: Bot,
) -> None:
    bot.server.inject(Fault(path_contains="/delayed_event/", answer_latency=HELD))
    adding = asyncio.ensure_future(add(bot.manager))  # on_exit: send (not for an unfinished add)
    await until(lambda: bool(bot.server.requests_to("/delayed_event/")))
    await bot.manager.close()
    assert bot.server.scheduled() == []  # already when close() returns
    with pytest.raises(KeepAliveError, match="closed"):
        await adding
    assert bot.fired() == []
    assert keep_alive_tasks() == []


# A restarted process takes back its leftovers while the server rate-limits -------------------

#: The previous process's switches, their delay (s) and the server's management rate.
COUNT = 12
DELAY = timedelta(seconds=30)
RATE = (1.0, 5)


async def advancing(clock: FakeClock, awaitable: Awaitable[Any], step: float = 0.25) -> Any:
    task = asyncio.ensure_future(awaitable)
    while not task.done():
        await clock.advance(step)
    return task.result()


@pytest.mark.parametrize("policy", [LeftoverPolicy.ADOPT, LeftoverPolicy.CANCEL])
async def test_a_restarted_process_takes_back_every_leftover_through_429s(
    policy: LeftoverPolicy,
) -> None:
    clock = FakeClock()
    async with FakeHomeserver(clock=clock, management_rate=RATE) as server:
        first = await fake_client(server)
        manager = KeepAliveManager(first, clock=clock, seed=1)
        for n in range(COUNT):
            await advancing(clock, add(manager, key=f"s{n}", delay=DELAY, on_exit=ExitPolicy.KEEP))
        await clock.advance(DELAY.total_seconds())  # their deadlines spread over the delay
        await advancing(clock, manager.close())  # killed: the events stay scheduled
        await first.close()

        second = await fake_client(server)
        manager = KeepAliveManager(second, clock=clock, seed=2)
        # The listing is refused for the pace, more than once, before it comes; so is
        # scheduling, for long (as Synapse does once the first process used its burst): the
        # leftovers are due before any new event can be armed.
        limited = {"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 1500}
        server.inject(Fault(path_contains="/delayed_events", status=429, body=limited, times=4))
        slow = {**limited, "retry_after_ms": 40_000}
        server.inject(Fault(path_contains="/delayed_event/", status=429, body=slow, times=COUNT))
        changed = {} if policy is LeftoverPolicy.ADOPT else {"v": 2}
        switches = await advancing(
            clock,
            asyncio.gather(
                *(
                    manager.add(
                        ROOM, "m.room.message", {**OFFLINE, **changed}, delay=DELAY,
                        key=f"s{n}", on_leftover=policy, on_exit=ExitPolicy.CANCEL,
                    )
                    for n in range(COUNT)
                )
            ),
        )  # fmt: skip
        await clock.advance(2 * DELAY.total_seconds())
        fired = [e for e in server.room_events if e["content"].get("body") == OFFLINE["body"]]
        assert fired == []
        assert {s.state for s in switches} == {SwitchState.ARMED}
        assert {e["delay_id"] for e in server.scheduled()} == {str(s.delay_id) for s in switches}
        await advancing(clock, manager.close())
        await second.close()
