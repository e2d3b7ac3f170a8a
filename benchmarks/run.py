"""nio-delayed benchmarks: ``make bench`` (all of it) or ``make bench-quick`` (under 2 minutes).

1. cost: CPU per restart for the keep-alive manager, for the bare aiohttp floor (the same
   requests from a plain loop), for the obvious alternative (a task per switch that sleeps and
   calls ``restart_delayed_event``) and for matrix-js-sdk in node (``benchmarks/js``), in the
   same run and on one schedule (see ``phases()``). Two clustered variants (switches armed
   together; the floor's requests sent in bursts) are reported apart.
2. scale: 100, 1,000 and 10,000 switches restarted every 10 s: restarts achieved, lateness of
   each restart against its schedule, CPU share, memory per switch, missed deadlines.
3. economy: requests per switch-hour against the minimum, without faults and with a server that
   answers 429 to a random 5% of restarts; requests sent inside a retry hint.
3b. token bucket: a server that rate-limits restarts like Synapse, with more switches than its
   rate serves at their interval: share of restarts answered 429 at steady state, restarts
   confirmed per second against the server's rate, missed deadlines, events that fired.
4. synapse: a bot killed with SIGKILL; when its event reaches a watcher, against the deadline
   it predicted and against the kill.

The server side of 1-3 is the fake homeserver in a separate process (``benchmarks.server``),
so the client is measured alone (node too, for the js-sdk row: ``npm ci`` installs its pinned
matrix-js-sdk into benchmarks/js/node_modules on first use; without node the row is skipped).
Results go to latest.json in benchmarks/results (or the directory given with --out), a table to
stdout, and a plot to scale.png beside latest.json when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import itertools
import json
import logging
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from nio import RoomCreateResponse, SyncResponse

from nio_delayed import (
    DelayedAsyncClient,
    ExitPolicy,
    KeepAliveManager,
    RateLimit,
    RequestPolicy,
    RoomSendDelayedResponse,
    ServerLimits,
    SwitchEventKind,
)
from nio_delayed.devserver import DevServer

RESULTS = Path(__file__).parent / "results"
JS = Path(__file__).parent / "js"
USER = "@bench:fake"
ROOM = "!bench:fake"
BODY = {"msgtype": "m.notice", "body": "bench switch"}
# Each cost variant runs this long (s) before it is measured: every switch restarting, and
# node's JIT done with the hot path (one second of warm-up left it about 15% dearer).
WARM_UP = 3.0
# The fake homeserver has no rate limits unless told, and the manager must know it: by default it
# assumes Synapse's, which hold it to one restart a second.
UNLIMITED = ServerLimits.unlimited()


# -- helpers ------------------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    token: str

    async def get(self, path: str) -> Any:
        """One of the bench server's own read-outs (benchmarks/server.py)."""
        async with aiohttp.ClientSession() as session, session.get(self.url + path) as resp:
            return await resp.json()


@contextlib.contextmanager
def fake_server(*args: str) -> Iterator[Server]:
    """benchmarks.server in its own process, stopped by its PID."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.server", *args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        details = json.loads(process.stdout.readline())
        yield Server(details["url"], details["token"])
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
        if process.stdout is not None:
            process.stdout.close()


@contextlib.asynccontextmanager
async def client_of(server: Server) -> AsyncIterator[DelayedAsyncClient]:
    client = DelayedAsyncClient(server.url, USER)
    client.restore_login(USER, "BENCH", server.token)
    try:
        yield client
    finally:
        await client.close()


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def add_switch(manager: KeepAliveManager, i: int, delay_ms: int, interval: float) -> Any:
    return manager.add(
        ROOM,
        "m.room.message",
        BODY,
        delay=timedelta(milliseconds=delay_ms),
        restart_interval=timedelta(seconds=interval),
        key=str(i),
        on_exit=ExitPolicy.KEEP,
    )


async def arm(manager: KeepAliveManager, n: int, delay_ms: int, interval: float) -> None:
    """All at once, 200 at a time, as a bot that starts with many switches would."""
    for start in range(0, n, 200):
        await asyncio.gather(
            *(add_switch(manager, i, delay_ms, interval) for i in range(start, min(n, start + 200)))
        )


async def arm_evenly(manager: KeepAliveManager, n: int, delay_ms: int, interval: float) -> None:
    """Switch k armed at k * interval / n. The manager moves each switch's first restart
    earlier by a random 0-10% of the interval (to spread switches armed together), and keeps
    that phase: the schedule that ``phases()`` gives the other variants."""
    loop = asyncio.get_running_loop()
    started, tasks = loop.time(), []
    for k in range(n):
        await asyncio.sleep(max(0.0, started + k * interval / n - loop.time()))
        tasks.append(asyncio.create_task(add_switch(manager, k, delay_ms, interval)))
    await asyncio.gather(*tasks)


async def schedule_events(client: DelayedAsyncClient, n: int, delay_ms: int) -> list[str]:
    ids = []
    for start in range(0, n, 200):
        results = await asyncio.gather(
            *(
                client.room_send_delayed(
                    ROOM, "m.room.message", BODY, timedelta(milliseconds=delay_ms)
                )
                for _ in range(start, min(n, start + 200))
            )
        )
        ids += [str(r.delay_id) for r in results if isinstance(r, RoomSendDelayedResponse)]
    return ids


def phases(n: int, interval: float) -> list[float]:
    """The cost benchmark's schedule: when in each interval (s) each of ``n`` switches restarts.
    Evenly spread, each moved earlier by a random 0-10% of the interval, as the manager does
    with switches armed at evenly spread times (``arm_evenly``): every variant then sends its
    requests on the same schedule. (Exactly even times cost the bare floor 10-20% more CPU
    per restart than these: random phases let one wake-up serve two restarts now and then.)"""
    rng = random.Random(1)
    return [(k * interval / n - rng.uniform(0, interval / 10)) % interval for k in range(n)]


def bunched(rows: list[list[Any]], interval: float) -> float:
    """The share of confirmed restarts that reached the server within 0.5 ms of the one before,
    after the first interval: 0 for exactly even times, about 22% for 500 a second at random
    times, high when one wake-up sends many."""
    times: list[float] = sorted(r[0] for r in rows if r[1] == 200)
    times = [t for t in times if t >= times[0] + interval] if times else []
    if len(times) < 2:
        return float("nan")
    return sum(b - a < 0.0005 for a, b in itertools.pairwise(times)) / (len(times) - 1)


# -- 1. cost per restart ------------------------------------------------------------------------


async def cost_manager(
    server: Server, n: int, interval: float, seconds: float, *, clustered: bool = False
) -> dict[str, float]:
    """The manager, its switches armed at evenly spread times; ``clustered`` arms them all at
    once, so that their restarts come in clumps and one wake-up serves many."""
    async with client_of(server) as client:
        manager = KeepAliveManager(client, limits=UNLIMITED)
        await manager.start()
        await (arm if clustered else arm_evenly)(manager, n, int(interval * 3000), interval)
        await asyncio.sleep(WARM_UP)
        cpu, before = time.process_time(), manager.stats().restarts_ok
        await asyncio.sleep(seconds)
        cpu, restarts = time.process_time() - cpu, manager.stats().restarts_ok - before
        await manager.close()
    return {"restarts": restarts, "cpu_us_per_restart": cpu / restarts * 1e6}


async def cost_naive(server: Server, n: int, interval: float, seconds: float) -> dict[str, float]:
    """The obvious alternative: one task per switch, sleeping until its next restart (each at
    its phase plus a whole number of intervals) and calling the API."""
    async with client_of(server) as client:
        ids = await schedule_events(client, n, int(interval * 3000))
        count = 0
        policy = RequestPolicy(timeout=timedelta(seconds=interval), max_attempts=1)
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def keep(delay_id: str, phase: float) -> None:
            # Not "sleep(interval)" after each call: switches woken together would leave
            # together from then on, and clump (see cost()).
            nonlocal count
            for k in itertools.count(1):
                await asyncio.sleep(max(0.0, started + phase + k * interval - loop.time()))
                resp = await client.restart_delayed_event(delay_id, policy=policy)
                count += not hasattr(resp, "kind")

        tasks = [
            asyncio.create_task(keep(i, phase))
            for i, phase in zip(ids, phases(n, interval), strict=True)
        ]
        await asyncio.sleep(WARM_UP)
        cpu, before = time.process_time(), count
        await asyncio.sleep(seconds)
        cpu, restarts = time.process_time() - cpu, count - before
        for task in tasks:
            task.cancel()
    return {"restarts": restarts, "cpu_us_per_restart": cpu / restarts * 1e6}


async def cost_floor(
    server: Server, n: int, interval: float, seconds: float, *, burst: bool = False
) -> dict[str, float]:
    """The floor: the same POSTs from a plain aiohttp loop, nothing else. Paced (the default),
    they leave on the schedule of ``phases()``; ``burst`` sends each round all at once, 32 at
    a time, which lets one event-loop wake-up serve many."""
    async with client_of(server) as client:
        ids = await schedule_events(client, n, int(interval * 3000))
    headers = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
    urls = [f"{server.url}/_matrix/client/v1/delayed_events/{i}/restart" for i in ids]
    count = 0
    async with aiohttp.ClientSession() as session:
        gate = asyncio.Semaphore(32)

        async def post(url: str) -> None:
            nonlocal count
            async with gate, session.post(url, data=b"{}", headers=headers) as resp:
                await resp.read()
                count += resp.status == 200

        async def rounds() -> None:
            while True:
                started = time.monotonic()
                await asyncio.gather(*(post(u) for u in urls))
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

        async def paced() -> None:
            started = time.monotonic()
            schedule = sorted(zip(phases(len(urls), interval), urls, strict=True))
            for k in itertools.count():
                for phase, url in schedule:
                    await asyncio.sleep(max(0.0, started + k * interval + phase - time.monotonic()))
                    task = asyncio.create_task(post(url))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)

        tasks: set[asyncio.Task[None]] = set()

        task = asyncio.create_task(rounds() if burst else paced())
        await asyncio.sleep(WARM_UP)
        cpu, before = time.process_time(), count
        await asyncio.sleep(seconds)
        cpu, restarts = time.process_time() - cpu, count - before
        for pending in (task, *tasks):
            pending.cancel()
        await asyncio.gather(task, *tasks, return_exceptions=True)
    return {"restarts": restarts, "cpu_us_per_restart": cpu / restarts * 1e6}


def js_missing() -> str | None:
    """Why the matrix-js-sdk row can't run, or None once it can: node must be installed; the
    pinned matrix-js-sdk is installed from benchmarks/js/package-lock.json with ``npm ci`` when
    node_modules is missing or older than the lock file."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None:
        return "node is not installed"
    installed = JS / "node_modules" / ".package-lock.json"
    lock = JS / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        if npm is None:
            return "npm is not installed (to install matrix-js-sdk)"
        print("   npm ci in benchmarks/js ...", flush=True)
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=JS, capture_output=True, text=True
        )
        if done.returncode:
            return f"npm ci failed: {done.stderr.strip()[-400:]}"
    return None


async def cost_js(server: Server, n: int, interval: float, seconds: float) -> dict[str, Any]:
    """matrix-js-sdk in node (benchmarks/js/restart.mjs): a timer per switch, on the schedule
    of ``phases()``, calling js-sdk's own restart; node measures its own CPU time."""
    async with client_of(server) as client:
        ids = await schedule_events(client, n, int(interval * 3000))
    args = {
        "baseUrl": server.url,
        "accessToken": server.token,
        "userId": USER,
        "delayIds": ids,
        "phases": phases(n, interval),
        "interval": interval,
        "warmup": WARM_UP,
        "seconds": seconds,
    }
    node = await asyncio.create_subprocess_exec(
        "node",
        "restart.mjs",
        cwd=JS,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,  # js-sdk warns of listeners on its abort signal: noise here
    )
    try:
        out, err = await asyncio.wait_for(
            node.communicate(json.dumps(args).encode()), WARM_UP + seconds + 60
        )
    finally:
        if node.returncode is None:
            node.kill()
            await node.wait()
    if node.returncode != 0:
        raise RuntimeError(f"benchmarks/js/restart.mjs failed: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out)
    return result


async def cost(n: int, seconds: float, rounds: int) -> dict[str, Any]:
    """Each variant ``rounds`` times, interleaved, so that drift in the machine's speed falls on
    all of them alike; the median of each is reported. Each run has a server of its own.

    All but the two clustered variants send on one schedule (``phases()``); ``bunched`` shows
    the schedule each produced. A task or timer that sleeps a whole interval after each call
    (asyncio.sleep, setInterval) drifts off it: switches woken together leave together from
    then on, and 64-69% of restarts came within 0.5 ms of another, which made them cheaper in
    the way the clustered variants are."""
    variants: dict[str, Any] = {
        "floor": cost_floor,
        "naive": cost_naive,
        "manager": cost_manager,
        "js_sdk": cost_js,
        "manager_clustered": functools.partial(cost_manager, clustered=True),
        "burst_floor": functools.partial(cost_floor, burst=True),
    }
    out: dict[str, Any] = {"switches": n, "interval_s": 1.0, "seconds": seconds, "rounds": rounds}
    if skipped := js_missing():
        print(f"   matrix-js-sdk row skipped: {skipped}", flush=True)
        out["js_sdk_skipped"] = skipped
        del variants["js_sdk"]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            with fake_server() as server:
                result = await run(server, n, 1.0, seconds)
                result["bunched"] = bunched(await server.get("/_bench/restarts"), 1.0)
                runs[name].append(result)
    for name, results in runs.items():
        per_restart = [r["cpu_us_per_restart"] for r in results]
        out[name] = {
            "cpu_us_per_restart": statistics.median(per_restart),
            "each_round": [round(v, 1) for v in per_restart],
            "restarts": sum(int(r["restarts"]) for r in results),
            "bunched": round(statistics.median(r["bunched"] for r in results), 4),
        }
        if name == "js_sdk":
            out[name]["version"] = results[0]["sdk_version"]
            out[name]["node"] = results[0]["node_version"]
            out[name]["errors"] = sum(r["errors"] for r in results)
    # Ratios of the medians, and each round's own ratio (the variants of one round ran close
    # together in time, on the machine in much the same state).
    for name, (top, bottom) in {
        "manager_vs_floor": ("manager", "floor"),
        "manager_vs_naive": ("manager", "naive"),
        "js_sdk_vs_manager": ("js_sdk", "manager"),
        "clustered_manager_vs_burst_floor": ("manager_clustered", "burst_floor"),
    }.items():
        if top in runs and bottom in runs:
            out[name] = out[top]["cpu_us_per_restart"] / out[bottom]["cpu_us_per_restart"]
            out[name + "_each_round"] = [
                round(a["cpu_us_per_restart"] / b["cpu_us_per_restart"], 3)
                for a, b in zip(runs[top], runs[bottom], strict=True)
            ]
    return out


# -- 2. scale, 3. economy, 3b. token bucket -----------------------------------------------------


async def scale(
    n: int,
    seconds: float,
    interval: float = 10.0,
    *server_args: str,
    limits: ServerLimits = UNLIMITED,
) -> dict[str, Any]:
    """``n`` switches (delay 3 intervals) on a fake started with ``server_args``, measured for
    ``seconds`` after one interval of warm-up; the manager told ``limits``."""
    with fake_server(*server_args) as server:
        async with client_of(server) as client:
            manager = KeepAliveManager(client, limits=limits, track_lateness=True)
            missed, events = 0, collections.Counter[str]()

            def count(event: Any) -> None:
                nonlocal missed
                missed += event.kind is SwitchEventKind.PROBABLY_FIRED
                events[event.kind.value] += 1

            manager.on_event(count)
            await manager.start()
            base = rss()
            armed = time.monotonic()
            await arm(manager, n, int(interval * 3000), interval)
            armed = time.monotonic() - armed
            per_switch = (rss() - base) / n
            await asyncio.sleep(interval)  # every switch past its first restart: steady state
            assert manager.lateness is not None
            manager.lateness.clear()
            start, cpu, before = time.monotonic(), time.process_time(), manager.stats().restarts_ok
            await asyncio.sleep(seconds)
            end, cpu = time.monotonic(), time.process_time() - cpu
            wall = end - start
            stats = manager.stats()
            capacity = manager.capacity()
            lateness = list(manager.lateness)
            await manager.close()
        seen, fired = await server.get("/_bench/restarts"), await server.get("/_bench/fired")
    restarts = stats.restarts_ok - before
    expected = n * seconds / interval
    return {
        "switches": n,
        "interval_s": interval,
        "seconds": round(wall, 1),
        "arming_s": round(armed, 2),
        "restarts": restarts,
        "expected": round(expected),
        "achieved": round(restarts / expected, 4),
        "lateness_ms": {
            q: round(percentile(lateness, v) * 1000, 2)
            for q, v in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))
        },
        "cpu_share": round(cpu / wall, 4),
        "rss_bytes_per_switch": round(per_switch),
        "missed_deadlines": missed,
        "fired": fired,
        "events": dict(events),
        "min_margin_s": round(stats.min_margin or 0, 3),
        # What the manager's budget said at the end: restarts a second it may spend (None: no
        # known limit), needs and plans, how far it stretched the intervals, switches beyond it.
        "capacity": {
            "restarts_per_second": capacity.restarts_per_second,
            "needed_per_second": round(capacity.needed_per_second, 3),
            "planned_per_second": round(capacity.planned_per_second, 3),
            "stretch": round(capacity.stretch, 3),
            "at_risk": len(capacity.at_risk),
        },
        "server_seen": _server_view(seen, n, start, end, interval),
    }


def _server_view(
    rows: list[list[Any]], n: int, start: float, end: float, interval: float
) -> dict[str, Any]:
    """What the server saw between ``start`` and ``end`` (monotonic clock, which the two
    processes share): requests per switch-hour, 429s included, restarts it confirmed, and any
    request that arrived while a retry hint it had given was still running."""
    window = [r for r in rows if start <= r[0] < end]
    seconds = end - start
    limited = [r for r in window if r[1] == 429]
    confirmed = sum(r[1] == 200 for r in window)
    inside = sum(
        1
        for hinted in limited
        for r in window
        if hinted[0] + 0.05 < r[0] < hinted[0] + (hinted[2] or 0) / 1000
    )
    per_hour = len(window) / n / seconds * 3600
    return {
        "requests": len(window),
        "answered_429": len(limited),
        "share_429": round(len(limited) / len(window), 4) if window else 0.0,
        "confirmed_per_second": round(confirmed / seconds, 3),
        "requests_per_switch_hour": round(per_hour, 1),
        "minimum_per_switch_hour": round(3600 / interval, 1),
        "vs_minimum": round(per_hour / (3600 / interval), 4),
        "confirmed_vs_minimum": round(confirmed / n / seconds * interval, 4),
        "inside_a_retry_hint": inside,
    }


async def token_bucket(
    n: int, seconds: float, interval: float, rate: float, burst: int, limits: ServerLimits
) -> dict[str, Any]:
    """``n`` switches against a server whose token bucket allows ``rate`` restarts a second
    (``burst`` saved up): their nominal demand is ``n / interval`` a second."""
    result = await scale(
        n,
        seconds,
        interval,
        "--management-rate",
        str(rate),
        "--management-burst",
        str(burst),
        limits=limits,
    )
    result["server_rate"] = rate
    result["server_burst"] = burst
    result["demand_per_second"] = round(n / interval, 3)
    return result


# -- 4. real Synapse ------------------------------------------------------------------------------


async def synapse_trials(trials: int, delay_ms: int = 2000) -> dict[str, Any]:
    after_deadline, after_kill = [], []
    with DevServer() as server:
        bot_user, watcher_user = server.register_user("bot"), server.register_user("watcher")
        bot = DelayedAsyncClient(server.url, bot_user.user_id)
        bot.restore_login(bot_user.user_id, bot_user.device_id, bot_user.access_token)
        watcher = DelayedAsyncClient(server.url, watcher_user.user_id)
        watcher.restore_login(
            watcher_user.user_id, watcher_user.device_id, watcher_user.access_token
        )
        created = await bot.room_create(invite=[watcher_user.user_id])
        assert isinstance(created, RoomCreateResponse)
        await watcher.join(created.room_id)
        synced = await watcher.sync(timeout=0)
        assert isinstance(synced, SyncResponse)
        since = synced.next_batch
        for trial in range(trials):
            body = f"bench trial {trial}"
            process = await asyncio.to_thread(
                subprocess.Popen,
                [
                    sys.executable,
                    "-m",
                    "benchmarks.bot",
                    server.url,
                    bot_user.user_id,
                    bot_user.access_token,
                    created.room_id,
                    str(delay_ms),
                    body,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert process.stdout is not None
            lines: list[str] = [await asyncio.to_thread(process.stdout.readline)]
            reader = asyncio.create_task(_read_lines(process, lines))
            await asyncio.sleep(1.5)
            predicted = json.loads(lines[-1])["deadline"]
            killed = time.time()
            process.kill()
            await asyncio.to_thread(process.wait)
            reader.cancel()
            process.stdout.close()
            arrived, since = await _arrival(watcher, created.room_id, body, since)
            after_deadline.append((arrived - predicted) * 1000)
            after_kill.append((arrived - killed) * 1000)
        await bot.close()
        await watcher.close()
        version = server.version
    return {
        "synapse": version,
        "trials": trials,
        "delay_ms": delay_ms,
        "after_predicted_deadline_ms": {
            "p50": round(statistics.median(after_deadline), 1),
            "p99": round(percentile(after_deadline, 0.99), 1),
            "max": round(max(after_deadline), 1),
        },
        "after_kill_ms": {
            "p50": round(statistics.median(after_kill), 1),
            "p99": round(percentile(after_kill, 0.99), 1),
        },
    }


async def _read_lines(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdout is not None
    while line := await asyncio.to_thread(process.stdout.readline):
        lines.append(line)


async def _arrival(
    watcher: DelayedAsyncClient, room_id: str, body: str, since: str
) -> tuple[float, str]:
    """Long-poll /sync until ``body`` arrives in the room; when it arrived (Unix time)."""
    while True:
        resp = await watcher.sync(timeout=10_000, since=since)
        now = time.time()
        assert isinstance(resp, SyncResponse), resp
        since = resp.next_batch
        room = resp.rooms.join.get(room_id)
        if room and any(getattr(e, "body", None) == body for e in room.timeline.events):
            return now, since


# -- report -------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        model = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), ""
        )
    with open("/proc/meminfo") as meminfo:
        mem_kb = int(meminfo.readline().split()[1])
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def print_report(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores, Python {m['python']}")
    loads = ", ".join(f"{k} {v:.1f}" for k, v in results["load_average"].items())
    print(f"load average (1 min) as each section started: {loads}")
    if "cost" in results:
        _print_cost(results["cost"])
    if "scale" in results:
        print(f"\n2. scale (restart every {results['scale'][0]['interval_s']:g} s)")
        print("   switches  restarts/expected  late p50/p99/max ms     CPU  RSS/switch  missed")
        for s in results["scale"]:
            late = s["lateness_ms"]
            print(
                f"   {s['switches']:>8}  {s['restarts']:>7}/{s['expected']:<8}  "
                f"{late['p50']:6.1f}/{late['p99']:6.1f}/{late['max']:7.1f}  "
                f"{s['cpu_share'] * 100:5.1f}%  {s['rss_bytes_per_switch'] / 1024:6.2f} KiB  "
                f"{s['missed_deadlines']}"
            )
    if "economy" in results:
        print("\n3. economy (requests per switch-hour, as the server saw them)")
        for name, e in results["economy"].items():
            v = e["server_seen"]
            print(
                f"   {name:<18} {v['requests_per_switch_hour']:7.1f} "
                f"(minimum {v['minimum_per_switch_hour']:g}, x{v['vs_minimum']:.4f}, "
                f"confirmed x{v['confirmed_vs_minimum']:.4f}); 429s {v['answered_429']}, "
                f"inside a hint {v['inside_a_retry_hint']}, missed {e['missed_deadlines']}, "
                f"fired {e['fired']}, smallest margin {e['min_margin_s']} s"
            )
    if "token_bucket" in results:
        print("\n3b. token-bucket server (after the first interval)")
        for name, b in results["token_bucket"].items():
            v = b["server_seen"]
            print(
                f"   {name:<22} {b['switches']} switches, demand {b['demand_per_second']:g}/s, "
                f"server {b['server_rate']:g}/s burst {b['server_burst']}: "
                f"429s {v['share_429'] * 100:.1f}% of {v['requests']}, "
                f"confirmed {v['confirmed_per_second']:.2f}/s, missed {b['missed_deadlines']}, "
                f"fired {b['fired']}"
            )
            print("      events: " + ", ".join(f"{k} {n}" for k, n in sorted(b["events"].items())))
            cap = b["capacity"]
            print(
                f"      budget at the end: {cap['restarts_per_second']} restarts/s, planned "
                f"{cap['planned_per_second']}/s, needed {cap['needed_per_second']}/s, "
                f"stretch {cap['stretch']}, at risk {cap['at_risk']}"
            )
    if "synapse" in results:
        s = results["synapse"]
        d, k = s["after_predicted_deadline_ms"], s["after_kill_ms"]
        print(f"\n4. Synapse {s['synapse']}: {s['trials']} bots killed, delay {s['delay_ms']} ms")
        print(f"   after the predicted deadline: p50 {d['p50']}, p99 {d['p99']}, max {d['max']} ms")
        print(f"   after the kill: p50 {k['p50']} ms, p99 {k['p99']} ms")


def _print_cost(c: dict[str, Any]) -> None:
    print(f"\n1. cost per restart ({c['switches']} switches, every {c['interval_s']:g} s)")
    print("   one schedule (evenly spread, each moved earlier by a random 0-10% of the interval):")
    for name in (
        "floor",
        "naive",
        "manager",
        "js_sdk",
        "-clustered:",
        "manager_clustered",
        "burst_floor",
    ):
        if name.startswith("-"):
            print(f"   {name[1:]}")
        elif name in c:
            us, n, b = c[name]["cpu_us_per_restart"], c[name]["restarts"], c[name]["bunched"]
            print(
                f"   {name:<18} {us:8.1f} us CPU per restart ({n} restarts, "
                f"{b * 100:4.1f}% within 0.5 ms of the one before)"
            )
    if "js_sdk_skipped" in c:
        print(f"   js_sdk             skipped: {c['js_sdk_skipped']}")
    ratios = []
    for name, label in (
        ("manager_vs_floor", "manager/floor"),
        ("manager_vs_naive", "manager/naive"),
        ("js_sdk_vs_manager", "js-sdk/manager"),
        ("clustered_manager_vs_burst_floor", "clustered manager/burst floor"),
    ):
        if name in c:
            rounds = ", ".join(f"{r:.2f}" for r in c[name + "_each_round"])
            ratios.append(f"{label} {c[name]:.2f} (rounds {rounds})")
    print("\n".join("   " + r for r in ratios))


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = results["scale"]
    sizes = [r["switches"] for r in rows]
    fig, (late, cpu) = plt.subplots(1, 2, figsize=(10, 4))
    for q in ("p50", "p99", "max"):
        late.plot(sizes, [r["lateness_ms"][q] for r in rows], marker="o", label=q)
    late.set(
        xscale="log",
        xlabel="switches",
        ylabel="restart lateness (ms)",
        title="Lateness against the schedule",
    )
    late.legend()
    cpu.plot(sizes, [r["cpu_share"] * 100 for r in rows], marker="o", color="tab:red")
    cpu.set(
        xscale="log",
        xlabel="switches",
        ylabel="CPU (% of one core)",
        title="Client CPU, restart every 10 s",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def bucket_rows(rate: float, burst: int) -> dict[str, ServerLimits]:
    """The token-bucket runs: what the manager is told of the server in each. Told twice the
    real rate, it must learn the real one from the 429s."""
    return {
        "told the real rate": ServerLimits(management=RateLimit(rate, burst), scheduling=None),
        "told 2x the rate": ServerLimits(
            management=RateLimit(2 * rate, 2 * burst), scheduling=None
        ),
    }


async def measure(results: dict[str, Any], quick: bool, only: set[str]) -> None:
    """The sections named in ``only``, into ``results``."""

    def section(name: str, label: str) -> None:
        print(f"{label} ...", flush=True)
        results["load_average"][name] = os.getloadavg()[0]

    # Quick: shorter runs, a 5 s interval, 1,000 switches only; in full, every 10 s for 60 s.
    interval, seconds = (5.0, 10) if quick else (10.0, 60)
    if "cost" in only:
        section("cost", "1. cost per restart")
        results["cost"] = await cost(500, 2 if quick else 8, 1 if quick else 3)
    if "scale" in only:
        results["scale"] = []
        for n in (1000,) if quick else (100, 1000, 10_000):
            section(f"scale {n}", f"2. scale: {n} switches")
            results["scale"].append(await scale(n, seconds, interval))
    if "economy" in only:
        section("economy", "3. economy under 429s")
        faults = ("--restart-429-share", "0.05", "--retry-after-ms", "200")
        results["economy"] = {"5% answered 429": await scale(100, seconds, interval, *faults)}
        if "scale" in results:
            no_faults = next(s for s in results["scale"] if s["switches"] == 1000)
            results["economy"] = {"no faults (1,000)": no_faults, **results["economy"]}
    if "bucket" in only:
        # More switches than the bucket serves at their interval: demand 6/s against 5/s.
        rate, burst = 5.0, 10
        results["token_bucket"] = {}
        for name, limits in bucket_rows(rate, burst).items():
            section(f"bucket {name}", f"3b. token-bucket server, {name}")
            results["token_bucket"][name] = await token_bucket(
                round(6 * interval), seconds, interval, rate, burst, limits
            )
    if "synapse" in only:
        section("synapse", "4. real Synapse")
        results["synapse"] = await synapse_trials(3 if quick else 20)


async def main(quick: bool, only: set[str], out: Path) -> None:
    results: dict[str, Any] = {
        "machine": machine(),
        "quick": quick,
        "when": time.strftime("%Y-%m-%d %H:%M"),
        # The 1-minute load average as each section starts (and at the end): this machine is
        # shared, and a busy one shows in CPU time and lateness.
        "load_average": {},
    }
    # The scenarios provoke the manager's warnings on purpose; the report counts what matters.
    logging.getLogger("nio_delayed").setLevel(logging.ERROR)
    await measure(results, quick, only)
    results["load_average"]["end"] = os.getloadavg()[0]
    (out / "latest.json").write_text(json.dumps(results, indent=2))
    print_report(results)
    if "scale" in results and plot(results, out / "scale.png"):
        print(f"\nplot: {out / 'scale.png'}")
    print(f"results: {out / 'latest.json'}")


SECTIONS = ("cost", "scale", "economy", "bucket", "synapse")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="nio-delayed benchmarks")
    parser.add_argument("--quick", action="store_true", help="a smaller run, under 2 minutes")
    parser.add_argument("--no-synapse", action="store_true", help="skip the real-Synapse trials")
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS, default=SECTIONS, help="run these sections only"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help="where latest.json and scale.png go (default: the committed benchmarks/results)",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    only = set(args.only) - ({"synapse"} if args.no_synapse else set())
    asyncio.run(main(args.quick, only, args.out))
