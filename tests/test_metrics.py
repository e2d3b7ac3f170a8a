"""The Prometheus exporter (nio_delayed.metrics), read as Prometheus would: its text output parsed
by prometheus_client's own parser, for a manager with a few switches on the fake homeserver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

pytest.importorskip("prometheus_client", reason="needs nio-delayed[metrics]")

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from nio_delayed import DelayedAsyncClient, KeepAliveManager, RateLimit, ServerLimits
from nio_delayed.metrics import KeepAliveCollector, aiohttp_handler, register
from nio_delayed.testing import FakeClock, FakeHomeserver, Fault

from .conftest import fake_client
from .test_keepalive import advancing

ROOM = "!room:fake"
OFFLINE = {"msgtype": "m.notice", "body": "bot offline"}
RATE_LIMITED = {"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": 500}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Bot:
    clock: FakeClock
    server: FakeHomeserver
    client: DelayedAsyncClient
    manager: KeepAliveManager
    registry: CollectorRegistry
    collector: KeepAliveCollector

    def scrape(self, text: str | None = None) -> Samples:
        """Every sample of the exposition, by name and labels."""
        text = text if text is not None else generate_latest(self.registry).decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    async def add(self, key: str, delay: int = 30_000) -> None:
        await self.manager.add(ROOM, "m.room.message", OFFLINE, delay=delay, key=key)


@pytest.fixture
async def bot() -> AsyncIterator[Bot]:
    clock = FakeClock()
    async with FakeHomeserver(clock=clock) as server:
        client = await fake_client(server)
        client.delayed_events_limits = ServerLimits(RateLimit(1.0, 5), None)
        manager = KeepAliveManager(client, clock=clock, seed=1, request_timeout=5)
        registry = CollectorRegistry()
        collector = register(manager, registry)
        yield Bot(clock, server, client, manager, registry, collector)
        await advancing(clock, manager.close())
        await client.close()


def one(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (f"nio_delayed_{name}", tuple(sorted(labels.items())))


async def test_switches_restarts_and_capacity_are_exported(bot: Bot) -> None:
    for key in "abc":
        await bot.add(key)
    bot.server.inject(Fault(path_contains="/restart", status=503, body="down", times=1))
    await bot.clock.advance(25)  # two rounds of restarts, one of them refused once
    samples = bot.scrape()
    stats = bot.manager.stats()
    capacity = bot.manager.capacity()

    assert samples[one("switches", state="armed")] == 3
    assert samples[one("switches", state="at_risk")] == 0
    assert samples[one("restarts_total", result="ok")] == stats.restarts_ok > 0
    assert samples[one("restarts_total", result="failed")] == stats.restarts_failed == 1
    assert samples[one("switch_events_total", kind="armed")] == 3
    assert samples[one("switch_events_total", kind="restart_failed")] == 1
    assert samples[one("switch_errors_total", kind="server_error")] == 1
    assert samples[one("switches_over_budget")] == 0
    assert samples[one("switches_deliverable")] == 3
    assert capacity.restarts_per_second is not None
    assert samples[one("restart_capacity_per_second")] == pytest.approx(
        capacity.restarts_per_second
    )
    assert samples[one("restart_needed_per_second")] == pytest.approx(capacity.needed_per_second)
    assert samples[one("restart_interval_stretch_ratio")] == 1
    assert 0 < samples[one("next_deadline_seconds")] <= 30
    assert samples[one("restart_margin_min_seconds")] > 0
    assert one("arming_capacity_per_second") not in samples  # no known limit: absent


async def test_every_metric_is_named_with_the_prefix_and_documented(bot: Bot) -> None:
    await bot.add("a")
    families = list(text_string_to_metric_families(generate_latest(bot.registry).decode()))
    assert families
    for family in families:
        assert family.name.startswith("nio_delayed_")
        assert family.documentation
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)


async def test_event_kinds_are_counted_by_their_values_and_429s_too(bot: Bot) -> None:
    """Kinds are labels taken from the events themselves: a kind added later needs no change."""
    await bot.add("a")
    bot.server.inject(Fault(path_contains="/restart", status=429, body=RATE_LIMITED, times=1))
    await bot.clock.advance(11)
    samples = bot.scrape()
    kinds = {dict(labels)["kind"] for name, labels in samples if "switch_events" in name}
    assert {"armed", "rate_limited"} <= kinds
    assert samples[one("rate_limited_requests_total")] == bot.manager.rate_limited == 1
    assert samples[one("switch_errors_total", kind="rate_limited")] == 1


async def test_counters_keep_what_a_stopped_switch_did(bot: Bot) -> None:
    await bot.add("a")
    await bot.add("b")
    await bot.clock.advance(25)
    before = bot.scrape()
    first = bot.manager.switches[0]
    await advancing(bot.clock, first.stop())
    after = bot.scrape()
    assert after[one("switches", state="armed")] == 1
    assert after[one("switch_events_total", kind="stopped")] == 1
    ok = one("restarts_total", result="ok")
    assert after[ok] == before[ok] > bot.manager.stats().restarts_ok  # counters never go down


async def test_a_scrape_from_another_thread_reads_the_manager_in_its_loop(bot: Bot) -> None:
    """``start_http_server`` scrapes from its own thread: the read is done by the bot's loop."""
    await bot.add("a")
    text = (await asyncio.to_thread(generate_latest, bot.registry)).decode()
    assert bot.scrape(text)[one("switches", state="armed")] == 1


async def test_the_aiohttp_handler_serves_the_registry(bot: Bot) -> None:
    await bot.add("a")
    app = web.Application()
    app.router.add_get("/metrics", aiohttp_handler(bot.registry))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
    finally:
        await runner.cleanup()
    assert bot.scrape(text)[one("switches", state="armed")] == 1


async def test_one_registry_takes_one_manager(bot: Bot) -> None:
    with pytest.raises(ValueError, match="Duplicated"):
        register(bot.manager, bot.registry)


async def test_per_switch_series_name_each_switch_by_room_type_and_key(bot: Bot) -> None:
    await bot.add("a")
    await bot.manager.add(ROOM, "org.example.status", {"up": False}, state_key="bot", delay=60_000)
    plain = bot.scrape()
    assert not [name for name, _ in plain if name.startswith("nio_delayed_switch_state")]
    registry = CollectorRegistry()
    register(bot.manager, registry, per_switch=True)
    samples = bot.scrape(generate_latest(registry).decode())
    message = {"room_id": ROOM, "event_type": "m.room.message", "switch_key": "a"}
    state = {"room_id": ROOM, "event_type": "org.example.status", "switch_key": "bot"}
    assert samples[one("switch_state", **message, state="armed")] == 1
    assert samples[one("switch_state", **state, state="armed")] == 1
    assert 0 < samples[one("switch_deadline_seconds", **message)] <= 30
    assert 30 < samples[one("switch_deadline_seconds", **state)] <= 60


async def test_the_exposition_holds_no_secret_and_no_content(bot: Bot) -> None:
    await bot.add("a")
    registry = CollectorRegistry()
    register(bot.manager, registry, per_switch=True)
    text = generate_latest(registry).decode()
    [switch] = bot.manager.switches
    assert "nio_delayed_switch_state" in text
    for secret in (str(switch.delay_id), bot.client.access_token, OFFLINE["body"]):
        assert secret not in text
