"""The fake homeserver in a process of its own, so that the benchmarks measure the client alone.

    python -m benchmarks.server [--restart-429-share 0.05 --retry-after-ms 200]
                                [--management-rate 5 --management-burst 10]

Prints one JSON line with its URL and an access token, then serves until killed. It answers at
once, serves the merged MSC under both its stable and its unstable prefix (nio-delayed picks the
stable one, matrix-js-sdk calls the unstable one), and has no limits unless told:
``--restart-429-share`` answers that share of restarts, at random, with 429 and the given hint;
``--management-rate`` puts restart/cancel/send behind a token bucket of that many requests a
second, at most ``--management-burst`` saved up (as Synapse's ``rc_delayed_event_mgmt``), which
answers 429 with the time until its next token.

``GET /_bench/restarts`` returns every restart it received as
``[arrival (s, monotonic clock), status, retry_after_ms or null]``; ``GET /_bench/fired`` the
number of delayed events its timers sent (a switch that fired).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal

from aiohttp import web

from nio_delayed.testing import FakeHomeserver, Fault

_LIMITED = {"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests"}


class BenchServer(FakeHomeserver):
    def _add_routes(self, app: web.Application) -> None:
        super()._add_routes(app)
        app.router.add_get("/_bench/restarts", self._restarts)
        app.router.add_get("/_bench/fired", self._fired)

    async def _restarts(self, request: web.Request) -> web.Response:
        rows = [
            [r.at, r.status, (r.answer or {}).get("retry_after_ms") if r.status == 429 else None]
            for r in self.requests
            if r.path.endswith("/restart")
        ]
        return web.json_response(rows)

    async def _fired(self, request: web.Request) -> web.Response:
        # The benchmarks never send a delayed event on purpose: each one in a room fired.
        return web.json_response(sum("unsigned" in e for e in self.room_events))


async def main(args: argparse.Namespace) -> None:
    rate = (args.management_rate, args.management_burst) if args.management_rate else None
    server = BenchServer(
        stable=True,
        unstable=True,
        max_delay_ms=None,
        max_scheduled=None,
        management_rate=rate,
        seed=1,
    )
    if args.restart_429_share:
        body = {**_LIMITED, "retry_after_ms": args.retry_after_ms}
        server.inject(
            Fault(
                path_contains="/restart",
                status=429,
                body=body,
                times=None,
                chance=args.restart_429_share,
            )
        )
    async with server:
        print(json.dumps({"url": server.url, "token": server.add_user("@bench:fake")}), flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--restart-429-share", type=float, default=0.0)
    parser.add_argument("--retry-after-ms", type=int, default=500)
    parser.add_argument("--management-rate", type=float, default=0.0)
    parser.add_argument("--management-burst", type=int, default=10)
    parser.add_argument("--no-gc", action="store_true", help="(experiment) no cyclic GC")
    args = parser.parse_args()
    if args.no_gc:
        gc.disable()
    asyncio.run(main(args))
