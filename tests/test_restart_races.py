"""A bot killed with N switches and restarted at once, adding all N concurrently, on Synapse with
its DEFAULT rate limits: every leftover is adopted (or cancelled) before it fires, while the
server answers 429. ``make test`` runs a short form; ``make soak`` (NIO_DELAYED_SOAK=1) a long
one, whose figures RELIABILITY.md reports (build/reliability.json).

A leftover that fired is seen two ways: its message in the room (a second user reads it), or a
404 to the restarted bot's restart or cancel of it (Synapse keeps no record of a sent event). A
fired event can also be dropped by Synapse's own message limit, so the room alone would not do.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from nio_delayed import LeftoverPolicy, SwitchEventKind
from nio_delayed.devserver import DevServer
from nio_delayed.testing import FaultProxy, ProxiedRequest

from .conftest import make_room
from .test_keepalive_synapse import BotProcess
from .test_stock_limits import fired, management, record

pytestmark = pytest.mark.synapse

SOAK = bool(os.environ.get("NIO_DELAYED_SOAK"))
#: More switches than the management burst, fewer than the budget keeps (8 of 12 s, 23 of 30 s);
#: deadlines short enough that a leftover left alone fires within the test.
COUNT = 20 if SOAK else 7
DELAY_MS = 30_000 if SOAK else 12_000


_ACTIONS = ("/restart", "/cancel", "/send")


def unrecognised(request: ProxiedRequest, requests: list[ProxiedRequest]) -> bool:
    """A 404 for the action in the path, on a Synapse that takes it in the body (the client
    then asks again that way): no word on the event."""
    in_body = any(not r.path.endswith(_ACTIONS) for r in requests)
    return in_body and request.path.endswith(_ACTIONS)


@pytest.mark.parametrize("policy", [LeftoverPolicy.ADOPT, LeftoverPolicy.CANCEL])
async def test_e_a_killed_bot_restarted_at_once_takes_back_every_leftover_before_it_fires(
    stock_synapse: DevServer, policy: LeftoverPolicy
) -> None:
    async for room in make_room(stock_synapse):
        async with FaultProxy(stock_synapse.url) as proxy:
            first = BotProcess(room, DELAY_MS, "synapse", str(COUNT), url=proxy.url)
            try:
                await first.wait_for("armed_all", timeout=300)
                first.kill()
            finally:
                first.close()
            restarted = time.monotonic()
            second = BotProcess(room, DELAY_MS, "synapse", str(COUNT), policy.value, url=proxy.url)
            try:
                added = await second.wait_for("added", timeout=300)
                took = time.monotonic() - restarted
                # Past every leftover's deadline, and one more delay of the new switches.
                await asyncio.sleep(2 * DELAY_MS / 1000)
                lost = await fired(room)
                second.process.terminate()  # a clean stop: exit policy cancel
                second.process.wait(60)
            finally:
                second.close()
        requests = management(proxy, since=restarted)
        gone = [r for r in requests if r.status == 404 and not unrecognised(r, requests)]
        limited = [r for r in proxy.requests if r.started >= restarted and r.status == 429]
        kinds = [line["kind"] for line in second.lines]
        record(
            f"e restarted at once ({policy.value})", room, switches=COUNT,
            delay_s=DELAY_MS / 1000, add_all_s=round(took, 1), fired_while_alive=lost,
            gone_404=len(gone), management_requests=len(requests),
            answered_429=len(limited), adopted=kinds.count(SwitchEventKind.ADOPTED.value),
            leftovers_cancelled=kinds.count(SwitchEventKind.LEFTOVER_CANCELLED.value),
        )  # fmt: skip
        print(
            f"{policy.value}: {COUNT} switches added in {took:.1f} s; {len(requests)} management "
            f"requests, {len(limited)} answered 429; {lost} fired, {len(gone)} answered 404"
        )
        assert added["states"] == ["armed"] * COUNT
        assert lost == 0
        assert gone == []
        if policy is LeftoverPolicy.ADOPT:
            assert kinds.count(SwitchEventKind.ADOPTED.value) == COUNT
        else:
            assert kinds.count(SwitchEventKind.LEFTOVER_CANCELLED.value) == COUNT
