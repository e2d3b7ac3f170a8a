"""Shared fixtures: real Synapse servers of both generations, and the fake MSC homeserver."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from nio import JoinResponse, MessageDirection, RoomCreateResponse, RoomMessagesResponse
from nio.crypto import ENCRYPTION_ENABLED

from nio_delayed import DelayedAsyncClient
from nio_delayed.devserver import DevServer, DevUser
from nio_delayed.testing import FakeHomeserver

#: Figures that tests record for RELIABILITY.md; written to build/reliability.json at the end.
RESULTS: dict[str, object] = {}

CURRENT_SYNAPSE = "1.163.2"
LEGACY_SYNAPSE = "1.142.1"
# `make test` installs the older Synapse in its own virtualenv and names its interpreter here.
LEGACY_PYTHON_ENV = "NIO_DELAYED_LEGACY_SYNAPSE_PYTHON"


# Tests of an optional extra skip without it (the fast lane runs with the test extra only).
needs_e2e = pytest.mark.skipif(
    not ENCRYPTION_ENABLED, reason="needs nio's encryption: pip install -e '.[e2e]'"
)
needs_niobot = pytest.mark.skipif(
    importlib.util.find_spec("niobot") is None, reason="needs nio-bot: pip install -e '.[niobot]'"
)

# In CI, hypothesis neither reads nor writes its example database: an example saved by an
# earlier run cannot turn a clean tree red. The same examples are drawn every run there.
settings.register_profile("ci", database=None, derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

#: Fixtures that start a real Synapse: a test that uses one (directly or through another
#: fixture, such as ``room``) is marked ``synapse`` here, so ``-m "not synapse"`` (the fast lane,
#: ``make check``) never waits for a Synapse.
SYNAPSE_FIXTURES = frozenset(
    {"synapse", "stock_synapse", "synapse_without_delayed_events", "sticky_synapse"}
)


#: Modules whose real-Synapse tests take longest (a minute for the slowest single test) go
#: first: with the workers taking one test at a time, no long test then starts last.
SLOWEST_FIRST = (
    "test_stock_limits.py",
    "test_reliability.py",
    "test_keepalive_synapse.py",
    "test_examples_and_devserver.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SYNAPSE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.synapse)

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST)

    items.sort(key=rank)  # stable: otherwise in collection order


@pytest.fixture(autouse=True)
def _synapse_needs_the_marker(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test that starts a DevServer itself must say so with ``@pytest.mark.synapse``."""
    if request.node.get_closest_marker("synapse") is None:

        def refuse(self: DevServer) -> DevServer:
            pytest.fail("this test starts a Synapse: mark it with @pytest.mark.synapse")

        monkeypatch.setattr(DevServer, "start", refuse)


def _synapse_python(generation: str) -> str:
    if generation == CURRENT_SYNAPSE:
        if importlib.util.find_spec("synapse") is None:
            if os.environ.get("CI"):
                pytest.fail("Synapse is not installed: run the tests with `make test`")
            pytest.skip("needs Synapse: pip install -e '.[server]'")
        return sys.executable
    python = os.environ.get(LEGACY_PYTHON_ENV)
    if not python:
        if os.environ.get("CI"):
            pytest.fail(f"{LEGACY_PYTHON_ENV} is not set: run the tests with `make test`")
        pytest.skip(f"Synapse {generation} needs {LEGACY_PYTHON_ENV} (set by `make test`)")
    return python


def _start(generation: str, **options: Any) -> DevServer:
    server = DevServer(python=_synapse_python(generation), **options).start()
    assert server.version == generation, f"expected Synapse {generation}, got {server.version}"
    return server


class _Servers:
    """The shared Synapses of a test process (an xdist worker), each started on first use and
    kept until the session ends: one per generation, with and without delayed events. Tests of
    both generations can then run in any order (`make test` hands them out longest first, one
    at a time) without a Synapse restart each time the generation changes."""

    def __init__(self) -> None:
        self._started: dict[tuple[str, bool, bool, bool], DevServer] = {}

    def get(
        self,
        generation: str,
        delayed_events: bool = True,
        stock: bool = False,
        sticky: bool = False,
    ) -> DevServer:
        """``stock``: with Synapse's own default rate limits (the others are relaxed);
        ``sticky``: with sticky events (MSC4354) on."""
        key = (generation, delayed_events, stock, sticky)
        if key not in self._started:
            self._started[key] = _start(
                generation,
                delayed_events=delayed_events,
                default_rate_limits=stock,
                sticky_events=sticky,
            )
        return self._started[key]

    def close(self) -> None:
        for server in self._started.values():
            server.close()


@pytest.fixture(scope="session")
def _servers() -> Iterator[_Servers]:
    servers = _Servers()
    yield servers
    servers.close()


@pytest.fixture(scope="session", params=[CURRENT_SYNAPSE, LEGACY_SYNAPSE])
def synapse(request: pytest.FixtureRequest, _servers: _Servers) -> DevServer:
    """A real Synapse with delayed events on, shared by the session's tests of its generation."""
    return _servers.get(request.param)


@pytest.fixture(scope="session", params=[CURRENT_SYNAPSE, LEGACY_SYNAPSE])
def stock_synapse(request: pytest.FixtureRequest, _servers: _Servers) -> DevServer:
    """A real Synapse with its own default rate limits, nothing relaxed (each test that uses it
    registers fresh users, whose rate-limit buckets start full)."""
    return _servers.get(request.param, stock=True)


@pytest.fixture(scope="session", params=[CURRENT_SYNAPSE, LEGACY_SYNAPSE])
def synapse_without_delayed_events(request: pytest.FixtureRequest, _servers: _Servers) -> DevServer:
    return _servers.get(request.param, delayed_events=False)


@pytest.fixture(scope="session")
def sticky_synapse(_servers: _Servers) -> DevServer:
    """Synapse 1.163.2 with sticky events (MSC4354) on, shared as the others are."""
    return _servers.get(CURRENT_SYNAPSE, sticky=True)


async def login(server: DevServer, user: DevUser) -> DelayedAsyncClient:
    client = DelayedAsyncClient(server.url, user.user_id)
    client.restore_login(user.user_id, user.device_id, user.access_token)
    client.delayed_events_limits = server.limits
    return client


_counter = iter(range(1_000_000))


def unique(name: str) -> str:
    return f"{name}{next(_counter)}x{int(time.time() * 1000) % 100_000}"


@dataclass
class Room:
    """A room on a real server with a bot (who schedules) and a watcher (who sees events)."""

    server: DevServer
    room_id: str
    bot: DelayedAsyncClient
    watcher: DelayedAsyncClient

    async def messages(self, event_type: str = "m.room.message") -> list[dict[str, Any]]:
        """What the watcher sees of ``event_type`` in the room, oldest first."""
        resp = await self.watcher.room_messages(
            self.room_id, direction=MessageDirection.back, limit=100
        )
        assert isinstance(resp, RoomMessagesResponse), resp
        sources = [e.source for e in resp.chunk if e.source.get("type") == event_type]
        return list(reversed(sources))

    async def wait_for(
        self,
        predicate: Callable[[], Awaitable[bool]],
        timeout: float,
        interval: float = 0.1,
    ) -> float:
        """Poll ``predicate`` until true; seconds it took. Fails after ``timeout``."""
        started = time.monotonic()
        while not await predicate():
            if time.monotonic() - started > timeout:
                pytest.fail(f"condition not met within {timeout} s")
            await asyncio.sleep(interval)
        return time.monotonic() - started


async def make_room(server: DevServer) -> AsyncIterator[Room]:
    bot_user = server.register_user(unique("bot"))
    watcher_user = server.register_user(unique("watcher"))
    bot, watcher = await login(server, bot_user), await login(server, watcher_user)
    try:
        # Anyone may write org.example.status, so the watcher can overwrite the bot's, and call
        # memberships, as in Element Call's rooms. (Room version 12 forbids naming the creator
        # in "users", so the events' levels are lowered.)
        power = {"events": {"org.example.status": 0, "org.matrix.msc3401.call.member": 0}}
        created = await bot.room_create(invite=[watcher_user.user_id], power_level_override=power)
        assert isinstance(created, RoomCreateResponse), created
        joined = await watcher.join(created.room_id)
        assert isinstance(joined, JoinResponse), joined
        yield Room(server, created.room_id, bot, watcher)
    finally:
        await bot.close()
        await watcher.close()


@pytest.fixture
async def room(synapse: DevServer) -> AsyncIterator[Room]:
    async for value in make_room(synapse):
        yield value


@pytest.fixture
async def fake() -> AsyncIterator[FakeHomeserver]:
    async with FakeHomeserver() as server:
        yield server


async def fake_client(server: FakeHomeserver, user_id: str = "@bot:fake") -> DelayedAsyncClient:
    client = DelayedAsyncClient(server.url, user_id)
    client.restore_login(user_id, "DEVICE", server.add_user(user_id))
    client.delayed_events_limits = server.limits
    return client


def pytest_sessionfinish(session: pytest.Session) -> None:
    worker_output = getattr(session.config, "workeroutput", None)
    if worker_output is not None:
        # A pytest-xdist worker: its figures go to the controller, which writes the file.
        worker_output["reliability"] = json.dumps(RESULTS)
        return
    if RESULTS:
        out = Path(__file__).resolve().parent.parent / "build" / "reliability.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(RESULTS, indent=2, sort_keys=True))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist: gather a worker's figures (a scenario's are keyed by Synapse version, and
    each generation may run on another worker)."""
    figures: dict[str, object] = json.loads(node.workeroutput.get("reliability", "{}"))
    for key, value in figures.items():
        mine = RESULTS.get(key)
        if isinstance(mine, dict) and isinstance(value, dict):
            mine.update(value)
        else:
            RESULTS[key] = value


def reap(process: subprocess.Popen[str]) -> None:
    """A test's last word on a process it started: killed if it still runs, waited for, and its
    output closed."""
    if process.poll() is None:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()
