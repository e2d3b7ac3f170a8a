"""A bot with dead-man's switches, run as its own process so that tests can SIGKILL it.

    python tests/bot_process.py URL USER_ID DEVICE_ID TOKEN ROOM_ID DELAY_MS \
        [LIMITS [COUNT [LEFTOVERS]]]

LIMITS is ``unlimited`` (the default: a test server with relaxed rate limits) or ``synapse``
(Synapse's defaults). With COUNT, it arms that many message switches one after another, prints
an ``armed_all`` line, and after about one delay (each has been restarted by then) a
``capacity`` line: how many of their events the library predicts would be delivered if the bot
died now. With LEFTOVERS (``adopt`` or ``cancel``, the leftover policy), it is a restarted bot:
it adds the COUNT switches all at once and prints an ``added`` line once every add() returned.
Prints every switch event as a JSON line; SIGTERM stops it cleanly (exit policy: cancel).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from datetime import timedelta

from nio_delayed import DelayedAsyncClient, ExitPolicy, LeftoverPolicy, ServerLimits, SwitchEvent

OFFLINE = {"msgtype": "m.notice", "body": "bot offline"}


def report(event: SwitchEvent) -> None:
    delay_id = event.switch.delay_id.short if event.switch.delay_id else None
    line = {"kind": event.kind.value, "state": event.state.value, "delay_id": delay_id}
    print(json.dumps(line), flush=True)


async def main(
    url: str,
    user_id: str,
    device_id: str,
    token: str,
    room_id: str,
    delay: str,
    limits: str = "unlimited",
    count: str = "",
    leftovers: str = "",
) -> None:
    client = DelayedAsyncClient(url, user_id)
    client.restore_login(user_id, device_id, token)
    client.delayed_events_limits = (
        ServerLimits() if limits == "synapse" else ServerLimits.unlimited()
    )
    manager = client.keep_alive
    manager.on_event(report)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, manager.close_soon)
    if not count:
        await manager.add(
            room_id,
            "m.room.message",
            OFFLINE,
            delay=timedelta(milliseconds=int(delay)),
            on_exit=ExitPolicy.CANCEL,
        )
    elif leftovers:
        added = await asyncio.gather(
            *(
                manager.add(
                    room_id, "m.room.message", OFFLINE, delay=int(delay), key=str(n),
                    on_exit=ExitPolicy.CANCEL, on_leftover=LeftoverPolicy(leftovers),
                )
                for n in range(int(count))
            )
        )  # fmt: skip
        line = {"kind": "added", "states": [s.state.value for s in added]}
        print(json.dumps(line), flush=True)
    else:
        switches = [
            await manager.add(
                room_id, "m.room.message", OFFLINE, delay=timedelta(milliseconds=int(delay)),
                key=str(n), on_exit=ExitPolicy.CANCEL,
            )
            for n in range(int(count))
        ]  # fmt: skip
        print(json.dumps({"kind": "armed_all"}), flush=True)
        # Within (nearly) one delay every switch has been restarted: their deadlines have spread.
        await asyncio.sleep(int(delay) / 1000 * 0.95)
        capacity = manager.capacity()
        line = {"kind": "capacity", "deliverable": capacity.deliverable, "switches": len(switches)}
        print(json.dumps(line), flush=True)
    await manager.wait_closed()
    await client.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
