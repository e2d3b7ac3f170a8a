"""The fake homeserver in a process of its own, so that the benchmarks measure the client alone.

    python -m benchmarks.server [--restart-429-share 0.1 --retry-after-ms 500]

Prints one JSON line with its URL and an access token, then serves until killed. It answers at
once (the merged MSC, stable dialect, no limits). ``GET /_bench/restarts`` returns every
restart it received as ``[arrival (s), status, retry_after_ms or null]``.
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

    async def _restarts(self, request: web.Request) -> web.Response:
        rows = [
            [r.at, r.status, (r.answer or {}).get("retry_after_ms") if r.status == 429 else None]
            for r in self.requests
            if r.path.endswith("/restart")
        ]
        return web.json_response(rows)


async def main(share: float, retry_after_ms: int) -> None:
    server = BenchServer(stable=True, unstable=False, max_delay_ms=None, max_scheduled=None, seed=1)
    if share:
        body = {**_LIMITED, "retry_after_ms": retry_after_ms}
        server.inject(
            Fault(path_contains="/restart", status=429, body=body, times=None, chance=share)
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
    parser.add_argument("--no-gc", action="store_true", help="(experiment) no cyclic GC")
    args = parser.parse_args()
    if args.no_gc:
        gc.disable()
    asyncio.run(main(args.restart_429_share, args.retry_after_ms))
