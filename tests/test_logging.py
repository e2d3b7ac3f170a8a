"""What operators read in the log: one logger per module, structured fields on every record about
a switch (the contract in README's "Logging" section), failures that need attention at WARNING
or above, and no secret in a message or a field."""

from __future__ import annotations

import ast
import io
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import nio_delayed
from nio_delayed import (
    DeadMansSwitch,
    DelayedAsyncClient,
    KeepAliveManager,
    RateLimit,
    ServerLimits,
    SwitchEventKind,
    SwitchState,
)
from nio_delayed.testing import FakeClock, FakeHomeserver, Fault

from .conftest import fake_client
from .test_keepalive import advancing

ROOM = "!room:fake"
OFFLINE = {"msgtype": "m.notice", "body": "bot offline"}
EVENTS_LOGGER = "nio_delayed._keepalive.events"
#: The fields every record about a switch carries (None where they do not apply).
SWITCH_FIELDS = {
    "room_id",
    "event_type",
    "switch_key",
    "switch_state",
    "event_kind",
    "delay_id_short",
    "error_kind",
    "errcode",
    "http_status",
}


@dataclass
class Bot:
    clock: FakeClock
    server: FakeHomeserver
    client: DelayedAsyncClient
    manager: KeepAliveManager


@pytest.fixture
async def bot(caplog: pytest.LogCaptureFixture) -> AsyncIterator[Bot]:
    caplog.set_level(logging.DEBUG, logger="nio_delayed")
    clock = FakeClock()
    async with FakeHomeserver(clock=clock) as server:
        client = await fake_client(server)
        manager = KeepAliveManager(client, clock=clock, seed=1, request_timeout=5)
        yield Bot(clock, server, client, manager)
        await advancing(clock, manager.close())
        await client.close()


def switch_records(
    caplog: pytest.LogCaptureFixture, kind: SwitchEventKind
) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event_kind", None) == kind.value]


def extras(record: logging.LogRecord) -> dict[str, object]:
    """What ``extra=`` added to the record: everything a bare record does not have."""
    bare = {*logging.LogRecord("x", logging.INFO, "x", 0, "", None, None).__dict__, "message"}
    return {name: value for name, value in record.__dict__.items() if name not in bare}


def test_every_module_asks_for_its_own_logger() -> None:
    """``logging.getLogger(__name__)`` everywhere: a module's records say where they come from,
    and configuring ``nio_delayed`` still reaches them all."""
    calls = [
        (path.name, ast.unparse(node))
        for path in Path(nio_delayed.__file__).parent.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("getLogger")
    ]
    assert calls  # the search finds them
    assert [(name, call) for name, call in calls if call != "logging.getLogger(__name__)"] == []


async def test_records_come_from_the_module_that_wrote_them(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    await bot.manager.add(ROOM, "m.room.message", OFFLINE, delay=30_000)
    await bot.clock.advance(11)  # one restart
    names = {r.name for r in caplog.records}
    assert {
        "nio_delayed._client.negotiation",
        "nio_delayed.transport",
        EVENTS_LOGGER,
    } <= names
    assert all(name.startswith("nio_delayed.") for name in names)


async def test_a_switch_event_record_carries_its_fields(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    switch = await bot.manager.add(ROOM, "m.room.message", OFFLINE, delay=30_000, key="main")
    [armed] = switch_records(caplog, SwitchEventKind.ARMED)
    assert armed.name == EVENTS_LOGGER
    assert armed.levelno == logging.INFO
    assert switch.delay_id is not None
    assert extras(armed) == {
        "room_id": ROOM,
        "event_type": "m.room.message",
        "switch_key": "main",
        "switch_state": "armed",
        "event_kind": "armed",
        "delay_id_short": switch.delay_id.short,
        "error_kind": None,
        "errcode": None,
        "http_status": None,
    }


async def test_a_request_record_carries_its_fields(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    switch = await bot.manager.add(ROOM, "m.room.message", OFFLINE, delay=30_000)
    await bot.clock.advance(11)  # one restart
    assert switch.delay_id is not None
    [restart] = [r for r in caplog.records if "/restart" in str(getattr(r, "http_path", ""))]
    assert restart.name == "nio_delayed.transport"
    assert restart.levelno == logging.DEBUG
    fields = extras(restart)
    assert set(fields) == {"http_method", "http_path", "http_status", "duration_ms"}
    assert (fields["http_method"], fields["http_status"]) == ("POST", 200)
    assert f"/{switch.delay_id.short}/" in str(fields["http_path"])
    assert isinstance(fields["duration_ms"], float)


async def test_a_state_switch_is_known_by_its_state_key(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    await bot.manager.add(ROOM, "org.example.status", {"up": False}, state_key="bot", delay=30_000)
    [armed] = switch_records(caplog, SwitchEventKind.ARMED)
    assert (armed.event_type, armed.switch_key) == (
        "org.example.status",
        "bot",
    )


async def test_a_failed_restart_carries_the_servers_error(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    await bot.manager.add(ROOM, "m.room.message", OFFLINE, delay=30_000)
    bot.server.inject(Fault(path_contains="/restart", status=503, body="down", times=1))
    await bot.clock.advance(11)
    [failed] = switch_records(caplog, SwitchEventKind.RESTART_FAILED)
    assert failed.http_status == 503
    assert failed.error_kind == "server_error"
    assert set(extras(failed)) == SWITCH_FIELDS


async def test_a_lost_event_and_a_switch_that_cannot_go_on_are_warned_of(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    switch = await bot.manager.add(ROOM, "m.room.message", OFFLINE, delay=30_000)
    assert switch.delay_id is not None
    bot.server.forget(str(switch.delay_id))  # the next restart finds it gone...
    forbidden = {"errcode": "M_FORBIDDEN", "error": "not in room"}
    bot.server.inject(
        Fault(path_contains="/delayed_event/", status=403, body=forbidden, times=None)
    )
    await bot.clock.advance(11)  # ...and arming a new one is refused for good
    assert switch.state is SwitchState.FAILED
    [lost] = switch_records(caplog, SwitchEventKind.LOST)
    [failed] = switch_records(caplog, SwitchEventKind.FAILED)
    assert lost.levelno == logging.WARNING
    assert failed.levelno == logging.ERROR
    assert (failed.switch_state, failed.errcode) == ("failed", "M_FORBIDDEN")


async def test_a_refused_token_is_an_error(bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    await bot.manager.add(ROOM, "m.room.message", OFFLINE, delay=30_000)
    refused = {"errcode": "M_UNKNOWN_TOKEN", "error": "Token expired"}
    bot.server.inject(Fault(path_contains="/restart", status=401, body=refused, times=None))
    await bot.clock.advance(11)
    [paused] = switch_records(caplog, SwitchEventKind.UNAUTHORIZED)
    assert paused.levelno == logging.ERROR
    assert paused.switch_state == "unauthorized"


async def test_a_switch_that_probably_fired_is_a_warning(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    await bot.manager.add(ROOM, "m.room.message", OFFLINE, delay=30_000)
    bot.server.inject(Fault(path_contains="/restart", status=502, body="down", times=None))
    await bot.clock.advance(40)
    [at_risk] = switch_records(caplog, SwitchEventKind.AT_RISK)
    [fired] = switch_records(caplog, SwitchEventKind.PROBABLY_FIRED)
    assert at_risk.levelno == fired.levelno == logging.WARNING
    # Each failed attempt before that is told at INFO: AT_RISK is what needs attention.
    assert {r.levelno for r in switch_records(caplog, SwitchEventKind.RESTART_FAILED)} == {
        logging.INFO
    }


async def test_a_switch_over_budget_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nio_delayed")
    clock = FakeClock()
    async with FakeHomeserver(clock=clock) as server:
        client = await fake_client(server)
        # Half a restart a second keeps about two switches of 5 s.
        client.delayed_events_limits = ServerLimits(RateLimit(0.5, 5), None)
        manager = KeepAliveManager(client, clock=clock, seed=1)
        for n in range(4):
            await advancing(
                clock, manager.add(ROOM, "m.room.message", OFFLINE, delay=5_000, key=str(n))
            )
        over = switch_records(caplog, SwitchEventKind.OVER_BUDGET)
        await advancing(clock, manager.close())
        await client.close()
    assert over
    assert {r.levelno for r in over} == {logging.WARNING}
    assert "0" not in {r.switch_key for r in over}  # the first added is kept


async def test_no_record_carries_a_token_or_a_whole_delay_id(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    token = bot.client.access_token
    switch: DeadMansSwitch = await bot.manager.add(ROOM, "m.room.message", OFFLINE, delay=30_000)
    first = str(switch.delay_id)
    bot.server.inject(Fault(path_contains="/restart", status=503, body="down", times=2))
    await bot.clock.advance(25)
    bot.server.forget(first)  # lost: looked up, re-armed under a new delay_id
    await bot.clock.advance(15)
    second = str(switch.delay_id)
    await advancing(bot.clock, switch.stop())
    assert second != first
    kinds = {getattr(r, "event_kind", None) for r in caplog.records}
    assert {"restart_failed", "lost", "rearmed", "stopped"} <= kinds
    for record in caplog.records:
        texts = [record.getMessage(), *map(str, extras(record).values())]
        for text in texts:
            for secret in (token, first, second):
                assert secret not in text, (record.name, text)
            assert OFFLINE["body"] not in text  # nor the content


def readme_block(containing: str) -> str:
    """The README's Python code block that contains ``containing``."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    [block] = [b for b in blocks if containing in b]
    return block


async def test_the_readmes_json_logging_writes_the_fields(bot: Bot) -> None:
    namespace: dict[str, object] = {}
    exec(compile(readme_block("class JsonFormatter"), "README.md", "exec"), namespace)
    handler = namespace["handler"]
    assert isinstance(handler, logging.StreamHandler)
    out = io.StringIO()
    handler.setStream(out)
    try:
        switch = await bot.manager.add(ROOM, "m.room.message", OFFLINE, delay=30_000, key="main")
    finally:
        logging.getLogger("nio_delayed").removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    [armed] = [line for line in lines if line.get("event_kind") == "armed"]
    assert switch.delay_id is not None
    assert armed["logger"] == EVENTS_LOGGER
    assert armed["level"] == "INFO"
    assert (armed["room_id"], armed["switch_key"], armed["switch_state"]) == (ROOM, "main", "armed")
    assert armed["delay_id_short"] == switch.delay_id.short
    [offer] = [line for line in lines if line["logger"] == "nio_delayed._client.negotiation"]
    assert (offer["homeserver"], offer["supported"]) == (bot.server.url, True)
    assert not [line for line in lines if line["level"] == "DEBUG"]  # the snippet's INFO level
