"""The quick starts run as the guide, the README and the demo say, and the devserver starts,
restarts and stops cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nio_delayed import DelayedEventsListResponse, RoomSendDelayedResponse
from nio_delayed.devserver import DevServer, DevServerError

from .conftest import LEGACY_SYNAPSE, Room, _start, reap
from .docs_samples import quick_start

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.synapse


def test_quickstart_demo_runs_end_to_end_and_cleans_up() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "delayed events supported: legacy dialect" in result.stdout
    assert "watcher received the last will from @bot:localhost" in result.stdout
    match = re.search(r"([+-][\d.]+) s from its deadline", result.stdout)
    assert match is not None, result.stdout
    assert -0.05 <= float(match.group(1)) < 1.0  # Synapse fires ~20 ms after the due time
    assert "Synapse stopped and its files deleted" in result.stdout


async def test_quickstart_demo_on_the_older_generation() -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from quickstart import demo  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(ROOT / "examples"))
    server = _start(LEGACY_SYNAPSE)
    try:
        late = await demo(server)
    finally:
        server.close()
    assert -0.05 <= late < 1.0


async def test_scheduled_events_survive_a_synapse_restart(room: Room) -> None:
    content = {"msgtype": "m.text", "body": "x"}
    resp = await room.bot.room_send_delayed(room.room_id, "m.room.message", content, 60_000)
    assert isinstance(resp, RoomSendDelayedResponse), str(resp)
    old_pid = room.server.pid
    room.server.restart()
    assert room.server.pid != old_pid
    listing = await room.bot.delayed_events()
    assert isinstance(listing, DelayedEventsListResponse), listing
    assert resp.delay_id in {e.delay_id for e in listing.scheduled}
    await room.bot.cancel_delayed_event(resp.delay_id)


def test_close_stops_the_process_by_pid_and_deletes_its_files() -> None:
    server = DevServer().start()
    pid, directory = server.pid, server.directory
    assert pid is not None
    user = server.register_user("someone")
    assert user.access_token not in repr(user)
    server.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not directory.exists()
    server.close()  # idempotent


def test_kill_is_a_crash_and_start_comes_back() -> None:
    server = DevServer().start()
    try:
        pid = server.pid
        assert pid is not None
        server.kill()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        server.start()
        assert server.register_user("after-crash").user_id == "@after-crash:localhost"
    finally:
        server.close()


def test_a_relative_interpreter_path_works(monkeypatch: pytest.MonkeyPatch) -> None:
    venv = Path(sys.executable).parent.parent
    monkeypatch.chdir(venv.parent)
    server = DevServer(python=os.path.relpath(sys.executable)).start()
    try:
        assert server.version
    finally:
        server.close()


def test_a_synapse_that_cannot_start_says_why() -> None:
    server = DevServer(python=sys.executable, extra_config={"listeners": "not a list"})
    with pytest.raises(DevServerError, match="exited with code"):
        server.start()
    assert server.pid is None
    server.close()


def start_script(script: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True
    )


def stop_script(process: subprocess.Popen[str]) -> int:
    """SIGTERM, as a service manager stops a bot; its exit status."""
    process.send_signal(signal.SIGTERM)
    return process.wait(30)


async def test_the_quick_start_runs_as_written(room: Room, tmp_path: Path) -> None:
    """The guide's (and the README's) quick start, as a program with the devserver's variables:
    it arms its switch, and SIGTERM ends it cleanly, the notice sent on the way out."""
    script = tmp_path / "quickstart.py"
    script.write_text(quick_start().code)
    bot = room.bot
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MATRIX_HOMESERVER": room.server.url,
        "MATRIX_USER_ID": bot.user_id,
        "MATRIX_DEVICE_ID": bot.device_id,
        "MATRIX_ACCESS_TOKEN": bot.access_token,
        "MATRIX_ROOM_ID": room.room_id,
    }
    process = start_script(script, env)
    try:
        assert process.stdout is not None
        first = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 30)
        assert first.startswith("switch armed"), first
        listing = await bot.delayed_events()
        assert isinstance(listing, DelayedEventsListResponse), listing
        [scheduled] = listing.scheduled
        assert (scheduled.delay_ms, scheduled.content["body"]) == (30_000, "bot went offline")
        assert stop_script(process) == 0
    finally:
        reap(process)

    async def sent_on_exit() -> bool:
        return any(m["content"]["body"] == "bot went offline" for m in await room.messages())

    await room.wait_for(sent_on_exit, timeout=5)
