"""A request that must not go twice goes once, even when its answer is lost on the way."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from nio_delayed import DelayedAsyncClient
from nio_delayed._client.session import AiohttpTransport
from nio_delayed.request_builders import schedule_request
from nio_delayed.support import Dialect
from nio_delayed.testing import FakeHomeserver, Fault

from .conftest import fake_client


@pytest.fixture
async def client(fake: FakeHomeserver) -> AsyncIterator[DelayedAsyncClient]:
    client = await fake_client(fake)
    yield client
    await client.close()


@pytest.mark.parametrize("state_key", [None, "bot"], ids=["message", "state"])
async def test_a_lost_answer_is_not_followed_by_a_second_send_below_the_request_path(
    fake: FakeHomeserver, client: DelayedAsyncClient, state_key: str | None
) -> None:
    """aiohttp sends a PUT again when its connection drops before the answer. A legacy /state
    scheduling has no transaction id: a second send would schedule a second event, so it goes
    once; a message (with its transaction id) may go again."""
    request = schedule_request(
        Dialect.LEGACY, "!room:fake", "org.example.status", {"on": False}, 30_000,
        txn_id="t1", state_key=state_key,
    )  # fmt: skip
    transport = AiohttpTransport(client)
    fake.inject(Fault(path_contains="?org.matrix.msc4140.delay", drop_answer=True))
    try:
        await transport.send(request, 5)
    except aiohttp.ClientError:
        pass  # the answer was lost, as injected
    finally:
        await transport.close()
    sent = fake.requests_to("org.matrix.msc4140.delay")
    assert len(sent) == (2 if state_key is None else 1)
