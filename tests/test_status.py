"""``nio-delayed status``: a running bot's switches, read from its metrics endpoint; in this
process (the exporter served by aiohttp on the fake homeserver's loop) and from the outside (a
bot process serving its metrics from prometheus_client's own HTTP thread)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client", reason="needs nio-delayed[metrics]")

from aiohttp import web
from prometheus_client import CollectorRegistry

from nio_delayed.metrics import aiohttp_handler, register
from nio_delayed.testing import FakeHomeserver, Fault

from . import test_metrics
from .test_cli import cli
from .test_metrics import Bot

ROOM = "!room:fake"
bot = test_metrics.bot  # the fixture: a bot on the fake homeserver with its exporter
BOT = Path(__file__).parent / "metrics_bot_process.py"


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def metrics_url(bot: Bot) -> AsyncIterator[str]:
    """A bot with three switches, one restart refused, its metrics served in this loop."""
    for key in "abc":
        await bot.add(key)
    bot.server.inject(Fault(path_contains="/restart", status=503, body="down", times=1))
    await bot.clock.advance(11)
    app = web.Application()
    app.router.add_get("/metrics", aiohttp_handler(bot.registry))
    async with serve(app) as base:
        yield f"{base}/metrics"


async def test_status_prints_the_switches_and_the_budget(
    metrics_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await cli(capsys, "status", "--metrics-url", metrics_url)
    assert (code, err) == (0, "")
    header, *lines = out.splitlines()
    assert header.split() == ["WHAT", "VALUE"]
    rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in lines)
    assert (rows["switches"], rows["armed"]) == ("3", "3")
    assert rows["needing attention"].startswith("0 ")
    assert rows["deliverable if killed"] == "3 of 3"
    assert rows["restarts ok / failed"].endswith(" / 1")
    assert rows["429 answers"] == rows["fires detected"] == "0"
    assert re.fullmatch(r"[\d.]+/s planned of 0\.\d+/s \(needed [\d.]+/s\)", rows["restart budget"])
    assert "restart_failed 1" in rows["events"]
    assert rows["errors"] == "server_error 1"


async def test_status_json_is_for_scripts(
    metrics_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await cli(capsys, "status", "--metrics-url", metrics_url, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["switches"] == 3
    assert result["by_state"] == {"armed": 3}
    assert (result["needing_attention"], result["over_budget"], result["deliverable"]) == (0, 0, 3)
    assert result["restarts"]["failed"] == 1
    assert result["rate_limited_requests"] == result["fires_detected"] == 0
    assert 0 < result["capacity"]["restarts_per_second"] < 1  # the limit less some room
    assert 0 < result["next_deadline_seconds"] <= 30
    assert result["events"]["armed"] == 3


async def test_status_lists_each_switch_when_the_exporter_names_them(
    bot: Bot, capsys: pytest.CaptureFixture[str]
) -> None:
    await bot.add("soon", delay=10_000)
    await bot.add("later", delay=60_000)
    registry = CollectorRegistry()
    register(bot.manager, registry, per_switch=True)
    app = web.Application()
    app.router.add_get("/metrics", aiohttp_handler(registry))
    async with serve(app) as base:
        code, out, err = await cli(capsys, "status", "--metrics-url", f"{base}/metrics")
    assert (code, err) == (0, "")
    _, listing = out.split("\n\n")
    header, *lines = listing.splitlines()
    assert header.split() == ["ROOM", "TYPE", "KEY", "STATE", "DEADLINE", "IN"]
    rows = [line.split() for line in lines]
    assert [row[2] for row in rows] == ["soon", "later"]  # the nearest deadline first
    assert {row[3] for row in rows} == {"armed"}


async def test_status_of_an_endpoint_that_is_not_there_fails_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = web.Application()  # a server without the endpoint...
    async with serve(app) as base:
        code, out, err = await cli(capsys, "status", "--metrics-url", f"{base}/metrics", "--json")
        assert (code, out) == (1, "")
        assert "answered 404" in err
    # ...and no server at all (the port was just freed)
    code, out, err = await cli(capsys, "status", "--metrics-url", f"{base}/metrics")
    assert (code, out) == (1, "")
    assert "cannot read" in err


async def test_status_of_a_page_without_the_exporter_says_what_is_missing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def other(request: web.Request) -> web.Response:
        return web.Response(text="# TYPE up gauge\nup 1\n")

    app = web.Application()
    app.router.add_get("/metrics", other)
    async with serve(app) as base:
        code, out, err = await cli(capsys, "status", "--metrics-url", f"{base}/metrics")
    assert (code, out) == (1, "")
    assert "no nio_delayed_ metrics" in err
    assert "register" in err


async def test_a_metrics_url_without_a_scheme_gets_a_hint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = await cli(capsys, "status", "--metrics-url", "127.0.0.1:9464/metrics")
    assert code == 2
    assert "did you mean http://127.0.0.1:9464/metrics?" in err


async def test_status_reads_a_running_bot_process_from_the_outside() -> None:
    async with FakeHomeserver() as server:
        token = server.add_user("@bot:fake")
        bot = await asyncio.create_subprocess_exec(
            sys.executable, str(BOT), server.url, "@bot:fake", token, ROOM, "4",
            stdout=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert bot.stdout is not None
            line = await asyncio.wait_for(bot.stdout.readline(), 60)
            port = json.loads(line)["metrics_port"]
            status = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "nio_delayed", "status", "--json",
                "--metrics-url", f"http://127.0.0.1:{port}/metrics",
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ),
            )  # fmt: skip
            out, err = await asyncio.wait_for(status.communicate(), 60)
            assert (status.returncode, err.decode()) == (0, "")
            result = json.loads(out)
        finally:
            bot.terminate()  # SIGTERM: a clean stop
            await asyncio.wait_for(bot.wait(), 30)
    assert bot.returncode == 0
    assert result["switches"] == 4
    assert result["by_state"] == {"armed": 4}
    assert result["events"]["armed"] == 4
    assert 0 < result["capacity"]["restarts_per_second"] < 1  # Synapse's default limit, less room
    assert sorted(s["switch_key"] for s in result["switch_list"]) == ["0", "1", "2", "3"]
    assert {s["state"] for s in result["switch_list"]} == {"armed"}
    assert all(0 < s["deadline_seconds"] <= 60 for s in result["switch_list"])
    assert server.scheduled() == []  # the bot cancelled its switches on SIGTERM


async def test_status_without_prometheus_client_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client.parser", None)  # as if not installed
    code, out, err = await cli(capsys, "status")
    assert (code, out) == (2, "")
    assert "pip install 'nio-delayed[metrics]'" in err
