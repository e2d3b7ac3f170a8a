"""The nio-delayed command: against real Synapse where it talks to a server, and against the fake
homeserver for the details that need none (errors, pipes, the parent-death signal)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from nio_delayed.cli import main
from nio_delayed.cli.devserver_command import QUICK_START_VARIABLES
from nio_delayed.devserver import DevServer
from nio_delayed.testing import FakeHomeserver

from .conftest import Room, reap

CONTENT = json.dumps({"msgtype": "m.text", "body": "from the cli"})


@pytest.fixture
def env_for(monkeypatch: pytest.MonkeyPatch) -> Callable[[Room], None]:
    """Clears MATRIX_*; calling it with a room sets them to the room's bot."""
    for name in ("MATRIX_HOMESERVER", "MATRIX_USER_ID", "MATRIX_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    def use(room: Room) -> None:
        monkeypatch.setenv("MATRIX_HOMESERVER", room.server.url)
        monkeypatch.setenv("MATRIX_USER_ID", room.bot.user_id)
        monkeypatch.setenv("MATRIX_ACCESS_TOKEN", room.bot.access_token)

    return use


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``nio-delayed ARGV`` in this process (in a thread: it runs its own event loop)."""
    capsys.readouterr()
    try:
        code = await asyncio.to_thread(main, list(argv))
    except SystemExit as exc:  # argparse refusing the command line
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def env_of(room: Room) -> dict[str, str]:
    return {
        **os.environ,
        "MATRIX_HOMESERVER": room.server.url,
        "MATRIX_USER_ID": room.bot.user_id,
        "MATRIX_ACCESS_TOKEN": room.bot.access_token,
    }


async def test_support(room: Room, env_for, capsys) -> None:  # type: ignore[no-untyped-def]
    env_for(room)
    code, out, _ = await cli(capsys, "support")
    assert code == 0
    assert re.search(r"supported\s+yes", out)
    assert re.search(r"dialect\s+legacy", out)
    code, out, _ = await cli(capsys, "support", "--json")
    assert code == 0
    assert json.loads(out)["dialect"] == "legacy"


async def test_schedule_list_show_restart_send(room: Room, env_for, capsys) -> None:  # type: ignore[no-untyped-def]
    env_for(room)
    code, out, _ = await cli(
        capsys, "schedule", "--room", room.room_id, "--type", "m.room.message",
        "--content", CONTENT, "--delay", "60s", "--json",
    )  # fmt: skip
    assert code == 0, out
    delay_id = json.loads(out)["delay_id"]

    code, out, _ = await cli(capsys, "list")
    assert code == 0
    assert delay_id not in out  # tables show a prefix of the secret
    short = delay_id[:6]
    assert short in out
    assert "scheduled" in out
    code, out, _ = await cli(capsys, "list", "--json")
    assert [e["delay_id"] for e in json.loads(out)] == [delay_id]

    code, out, _ = await cli(capsys, "show", short)  # a unique prefix is enough
    assert code == 0
    assert re.search(r"delay\s+60.0s", out)
    assert "from the cli" in out
    assert (await cli(capsys, "restart", short))[1].startswith("restarted")
    code, out, _ = await cli(capsys, "send", delay_id, "--json")
    assert (code, json.loads(out)["ok"]) == (0, True)

    async def arrived() -> bool:
        return any(e["content"].get("body") == "from the cli" for e in await room.messages())

    await room.wait_for(arrived, timeout=5)
    code, _, err = await cli(capsys, "show", delay_id)
    assert code == 1
    assert "not_found" in err


async def test_schedule_a_state_event_and_cancel_it(room: Room, env_for, capsys) -> None:  # type: ignore[no-untyped-def]
    env_for(room)
    code, out, _ = await cli(
        capsys, "schedule", "--room", room.room_id, "--type", "org.example.status",
        "--state-key", "", "--content", '{"online": false}', "--delay", "1m",
    )  # fmt: skip
    assert code == 0
    delay_id = out.strip().splitlines()[-1]
    code, out, _ = await cli(capsys, "list")
    assert "org.example.status" in out
    assert "''" in out  # the empty state key
    assert (await cli(capsys, "cancel", delay_id))[0] == 0
    assert "no delayed events" in (await cli(capsys, "list"))[1]


async def test_bad_input_is_refused_with_a_clear_message(room: Room, env_for, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = await cli(capsys, "list")
    assert code == 2
    assert "missing credentials: --homeserver (or MATRIX_HOMESERVER)" in err
    env_for(room)
    schedule = ["schedule", "--room", room.room_id, "--type", "m.room.message"]
    for args, says in [
        ([*schedule, "--content", CONTENT, "--delay", "0"], "a duration must be positive"),
        ([*schedule, "--content", CONTENT, "--delay", "soon"], "is not a duration"),
        ([*schedule, "--content", "{not json", "--delay", "1s"], "content is not valid JSON"),
        ([*schedule, "--content", "[1]", "--delay", "1s"], "content must be a JSON object"),
        (["schedule", "--room", "#alias:x", "--type", "t", "--content", "{}", "--delay", "1s"],
         "room_resolve_alias"),
    ]:  # fmt: skip
        code, _, err = await cli(capsys, *args)
        assert code == 2, (args, err)
        assert says in err, (args, err)
    code, _, err = await cli(capsys, *schedule, "--content", CONTENT, "--delay", "25h")
    assert code == 1
    assert "delay_too_large" in err
    assert "86400000 ms" in err
    code, _, err = await cli(capsys, "restart", "syd_doesnotexist")
    assert code == 1
    assert "error [not_found] 404 M_NOT_FOUND" in err
    code, out, err = await cli(capsys, "cancel", "syd_doesnotexist", "--json")
    assert code == 1
    assert out == ""
    assert json.loads(err)["error"]["kind"] == "not_found"


async def test_unsupported_server_is_reported(
    synapse_without_delayed_events: DevServer,
    env_for,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    from .conftest import make_room

    async for room in make_room(synapse_without_delayed_events):
        env_for(room)
        code, out, _ = await cli(capsys, "support")
        assert code == 1
        assert re.search(r"supported\s+no", out)
        code, _, err = await cli(
            capsys, "schedule", "--room", room.room_id, "--type", "m.room.message",
            "--content", CONTENT, "--delay", "1s",
        )  # fmt: skip
        assert code == 1
        assert "unsupported" in err


def run_command(room: Room, *command: str, delay: str = "2s") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nio_delayed", "run", "--room", room.room_id,
         "--type", "m.room.message", "--content", CONTENT, "--delay", delay, "--", *command],
        env=env_of(room), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def test_run_cancels_on_success_and_sends_on_failure(room: Room) -> None:
    ok = await asyncio.to_thread(
        run_command, room, sys.executable, "-c", "import time; time.sleep(3)"
    )
    assert ok.returncode == 0, ok.stderr
    assert "switch armed" in ok.stderr
    assert "the event was cancelled" in ok.stderr
    assert await room.messages() == []
    failed = await asyncio.to_thread(run_command, room, sys.executable, "-c", "raise SystemExit(3)")
    assert failed.returncode == 3
    assert "the event was sent" in failed.stderr
    missing = await asyncio.to_thread(run_command, room, "no-such-command-anywhere")
    assert missing.returncode == 127
    assert "cannot run 'no-such-command-anywhere'" in missing.stderr
    assert len(await room.messages()) == 2
    listing = await room.bot.delayed_events()
    assert listing.scheduled == []  # type: ignore[union-attr]


async def test_run_fires_when_the_wrapper_is_killed(room: Room) -> None:
    process = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "nio_delayed", "run", "--room", room.room_id, "--type",
         "m.room.message", "--content", CONTENT, "--delay", "2s", "--events", "json", "--",
         sys.executable, "-c", "import time; time.sleep(60)"],
        env=env_of(room), stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        first = await asyncio.to_thread(process.stderr.readline)
        assert json.loads(first)["kind"] == "armed"
        await asyncio.sleep(3)
        assert await room.messages() == []
        os.killpg(process.pid, signal.SIGKILL)

        async def fired() -> bool:
            return len(await room.messages()) == 1

        await room.wait_for(fired, timeout=4)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        if process.stderr is not None:
            process.stderr.close()


async def test_run_refuses_to_start_the_command_on_an_unsupported_server(
    synapse_without_delayed_events: DevServer,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    from .conftest import make_room

    marker = tmp_path / "ran"
    async for room in make_room(synapse_without_delayed_events):
        result = await asyncio.to_thread(run_command, room, "touch", str(marker))
        assert result.returncode == 1
        assert "the command was not started" in result.stderr
        assert not marker.exists()


def test_run_needs_a_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nio_delayed", "run", "--homeserver", "http://x", "--user-id",
         "@a:x", "--access-token", "t", "--room", "!r:x", "--type", "t", "--content", "{}",
         "--delay", "1s"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "give the command to run after --" in result.stderr


@pytest.mark.synapse
def test_devserver_command_gives_the_quick_starts_variables_and_stops_on_ctrl_c() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "nio_delayed", "devserver", "--json", "--users", "bot,alice"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        details = json.loads(process.stdout.readline())
        bot, alice = details["users"]
        assert (bot["user_id"], alice["user_id"]) == ("@bot:localhost", "@alice:localhost")
        # Everything the quick start reads, for the bot, in a room both users are in.
        assert details["env"] == {
            "MATRIX_HOMESERVER": details["url"],
            "MATRIX_USER_ID": bot["user_id"],
            "MATRIX_DEVICE_ID": bot["device_id"],
            "MATRIX_ACCESS_TOKEN": bot["access_token"],
            "MATRIX_ROOM_ID": details["room_id"],
        }
        assert list(details["env"]) == list(QUICK_START_VARIABLES)
        members = urllib.request.Request(
            f"{details['url']}/_matrix/client/v3/rooms/{details['room_id']}/joined_members",
            headers={"Authorization": f"Bearer {alice['access_token']}"},
        )
        with urllib.request.urlopen(members, timeout=5) as r:
            assert set(json.load(r)["joined"]) == {"@bot:localhost", "@alice:localhost"}
        whoami = urllib.request.Request(
            f"{details['url']}/_matrix/client/v3/account/whoami",
            headers={"Authorization": f"Bearer {bot['access_token']}"},
        )
        with urllib.request.urlopen(whoami, timeout=5) as r:
            assert json.load(r)["device_id"] == bot["device_id"]
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        with pytest.raises(ProcessLookupError):
            os.kill(details["pid"], 0)  # Synapse is gone too
    finally:
        reap(process)


@pytest.mark.synapse
def test_devserver_command_prints_export_lines_a_shell_can_paste() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "nio_delayed", "devserver"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        lines = iter(process.stdout.readline, "")
        printed = list(itertools.takewhile(lambda line: "Press Ctrl-C" not in line, lines))
        exports = [shlex.split(line) for line in printed if line.strip().startswith("export ")]
        names = [words[1].partition("=")[0] for words in exports]
        assert names == list(QUICK_START_VARIABLES)
        values = dict(words[1].partition("=")[::2] for words in exports)
        assert values["MATRIX_ROOM_ID"].startswith("!")  # quoted: `!` is special in a shell
        assert f"room {values['MATRIX_ROOM_ID']}, every user above joined" in "".join(printed)
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        reap(process)


@pytest.mark.synapse
def test_demo_runs_the_whole_story() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nio_delayed", "demo", "--alive", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Killing the bot with SIGKILL" in out
    assert 'received "demo-bot went offline' in out
    after_kill = float(re.search(r"([\d.]+) s after SIGKILL", out).group(1))  # type: ignore[union-attr]
    assert after_kill <= 2.0 + 1.0
    late_ms = float(re.search(r"([+-]\d+) ms from the deadline", out).group(1))  # type: ignore[union-attr]
    assert -600 <= late_ms <= 1000  # status lines are 0.5 s apart: the prediction is that fresh
    assert "Synapse stopped and its files deleted." in out


def env_of_fake(fake: FakeHomeserver) -> dict[str, str]:
    return {
        **os.environ,
        "MATRIX_HOMESERVER": fake.url,
        "MATRIX_USER_ID": "@bot:fake",
        "MATRIX_ACCESS_TOKEN": fake.add_user("@bot:fake"),
    }


async def test_errors_go_to_stderr_also_with_json(
    fake: FakeHomeserver, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in env_of_fake(fake).items():
        monkeypatch.setenv(name, value)
    code, out, err = await cli(capsys, "show", "syd_nosuchevent", "--json")
    assert code == 1
    assert out == ""  # stdout holds results only: `| jq` never reads an error as one
    assert json.loads(err)["error"]["kind"] == "not_found"


async def test_a_homeserver_url_without_a_scheme_gets_a_hint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = await cli(
        capsys, "list", "--homeserver", "matrix.example.org", "--user-id", "@bot:example.org",
        "--access-token", "t",
    )  # fmt: skip
    assert code == 2
    assert "did you mean https://matrix.example.org?" in err
    assert out == ""


async def test_a_closed_pipe_ends_the_command_quietly(fake: FakeHomeserver) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written, as after `| head -1`
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nio_delayed", "support",
            env=env_of_fake(fake), stdout=write_end, stderr=subprocess.PIPE,
        )  # fmt: skip
    finally:
        os.close(write_end)
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert err.decode() == ""  # no traceback, no "Exception ignored"
    assert process.returncode == 128 + signal.SIGPIPE


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its reaper is not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux parent-death signal")
async def test_run_takes_its_command_down_when_the_wrapper_is_killed(
    fake: FakeHomeserver, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    wrapper = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nio_delayed", "run", "--room", "!r:fake", "--type",
        "org.example.status", "--state-key", "", "--content", "{}", "--delay", "30s",
        "--events", "none", "--", sys.executable, "-c", child,
        env=env_of_fake(fake),
    )  # fmt: skip
    pid = None
    try:
        for _ in range(600):
            if pid_file.exists() and pid_file.read_text():
                pid = int(pid_file.read_text())
                break
            await asyncio.sleep(0.1)
        assert pid is not None, "the command did not start"
        assert _running(pid)
        wrapper.kill()  # SIGKILL: the wrapper cannot pass anything on itself
        await asyncio.wait_for(wrapper.wait(), 10)
        for _ in range(50):
            if not _running(pid):
                break
            await asyncio.sleep(0.1)
        assert not _running(pid), "the command outlived its killed wrapper"
    finally:
        if wrapper.returncode is None:
            wrapper.kill()
            await wrapper.wait()
        if pid is not None and _running(pid):
            os.kill(pid, signal.SIGKILL)
