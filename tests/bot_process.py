"""A bot with one dead-man's switch, run as its own process so that tests can SIGKILL it.

    python tests/bot_process.py URL USER_ID DEVICE_ID TOKEN ROOM_ID DELAY_MS

Prints every switch event as a JSON line; SIGTERM stops it cleanly (exit policy: cancel).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from nio_delayed import DelayedAsyncClient, ExitPolicy, SwitchEvent

OFFLINE = {"msgtype": "m.notice", "body": "bot offline"}


def report(event: SwitchEvent) -> None:
    delay_id = event.switch.delay_id.short if event.switch.delay_id else None
    line = {"kind": event.kind.value, "state": event.state.value, "delay_id": delay_id}
    print(json.dumps(line), flush=True)


async def main(
    url: str, user_id: str, device_id: str, token: str, room_id: str, delay: str
) -> None:
    client = DelayedAsyncClient(url, user_id)
    client.restore_login(user_id, device_id, token)
    manager = client.keep_alive
    manager.on_event(report)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, manager.close_soon)
    await manager.add(
        room_id, "m.room.message", OFFLINE, delay=int(delay), on_exit=ExitPolicy.CANCEL
    )
    await manager.wait_closed()
    await client.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
