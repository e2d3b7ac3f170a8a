"""The bot of the Synapse benchmark: one switch; prints its predicted deadline every 10 ms.

    python -m benchmarks.bot URL USER_ID TOKEN ROOM_ID DELAY_MS BODY

Each line is ``{"deadline": <Unix time the server is due to send the event>}``; the benchmark
kills this process and compares the event's arrival with the last line it read.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import timedelta

from nio_delayed import DelayedAsyncClient, ExitPolicy, ServerLimits


async def main(url: str, user_id: str, token: str, room_id: str, delay_ms: str, body: str) -> None:
    client = DelayedAsyncClient(url, user_id)
    client.restore_login(user_id, "bench-bot", token)
    # The benchmark's Synapse (DevServer) runs with relaxed rate limits; by default the
    # keep-alive would assume Synapse's, too few restarts a second for a 2 s delay.
    client.delayed_events_limits = ServerLimits.unlimited()
    switch = await client.keep_alive.add(
        room_id,
        "m.room.message",
        {"msgtype": "m.notice", "body": body},
        delay=timedelta(milliseconds=int(delay_ms)),
        on_exit=ExitPolicy.KEEP,
    )
    while True:
        print(json.dumps({"deadline": time.time() + (switch.deadline_in or 0)}), flush=True)
        await asyncio.sleep(0.01)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
