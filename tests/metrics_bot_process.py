"""A bot that exports its keep-alive's metrics, run as its own process for ``nio-delayed status``.

    python tests/metrics_bot_process.py URL USER_ID TOKEN ROOM_ID COUNT

Arms COUNT message switches, serves the metrics (per switch too) on 127.0.0.1 (a free port, from
``start_http_server``'s own thread) and prints ``{"metrics_port": PORT}`` once they are armed.
SIGTERM stops it cleanly (exit policy: cancel).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from prometheus_client import CollectorRegistry, start_http_server

from nio_delayed import DelayedAsyncClient, ExitPolicy, ServerLimits
from nio_delayed.metrics import register

OFFLINE = {"msgtype": "m.notice", "body": "bot offline"}


async def main(url: str, user_id: str, token: str, room_id: str, count: str) -> None:
    client = DelayedAsyncClient(url, user_id)
    client.restore_login(user_id, "METRICS", token)
    client.delayed_events_limits = ServerLimits()  # Synapse's defaults: a known budget
    manager = client.keep_alive
    registry = CollectorRegistry()
    register(manager, registry, per_switch=True)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, manager.close_soon)
    for n in range(int(count)):
        await manager.add(
            room_id, "m.room.message", OFFLINE, delay=60_000, key=str(n), on_exit=ExitPolicy.CANCEL
        )
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    print(json.dumps({"metrics_port": server.server_port}), flush=True)
    await manager.wait_closed()
    server.shutdown()
    thread.join()
    await client.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
