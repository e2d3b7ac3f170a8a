"""``nio-delayed run ... -- COMMAND``: a dead-man's switch around any program.

The switch is armed before the program starts and kept alive while it runs. When the program
exits, the event is sent or cancelled according to its exit status. If the program, this
wrapper or the machine dies, no one restarts the switch and the server sends the event. On
Linux, a killed wrapper takes the program down with it (the program gets SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import signal
import sys
from collections.abc import Callable

from .. import (
    DeadMansSwitch,
    DelayedAsyncClient,
    ExitPolicy,
    InvalidInput,
    KeepAliveError,
    SwitchEvent,
)
from .common import (
    DURATION_HELP,
    EXIT_ERROR,
    CommandError,
    add_credential_options,
    parse_content,
    parse_duration,
    parse_switch_delay,
)

__all__ = ["add_run_command"]

_POLICIES = [policy.value for policy in ExitPolicy]
# What a shell answers for a command it cannot start.
_EXIT_CANNOT_RUN = 127
# From <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1


def add_run_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "run",
        help="keep a dead-man's switch alive while a command runs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_credential_options(parser)
    parser.add_argument("--room", required=True, help="room ID (!...)")
    parser.add_argument("--type", required=True, dest="event_type", help="event type")
    parser.add_argument("--content", required=True, type=parse_content, help="JSON, or @file.json")
    parser.add_argument(
        "--delay",
        required=True,
        type=parse_switch_delay,
        help=f"the switch's delay, at least 1s ({DURATION_HELP})",
    )
    parser.add_argument("--state-key", help="makes it a state event ('' allowed)")
    parser.add_argument(
        "--interval",
        type=parse_duration,
        help=f"restart interval, at least 100ms and below the delay (default: delay/3; "
        f"{DURATION_HELP})",
    )
    parser.add_argument(
        "--on-success",
        choices=_POLICIES,
        default="cancel",
        help="after exit status 0 (default: cancel)",
    )
    parser.add_argument(
        "--on-failure",
        choices=_POLICIES,
        default="send",
        help="after any other status (default: send)",
    )
    parser.add_argument(
        "--events",
        choices=["text", "json", "none"],
        default="text",
        help="report switch events on stderr (json adds a status line every 0.5 s)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    parser.set_defaults(run=run, needs_client=True)


def _status(switch: DeadMansSwitch) -> dict[str, object]:
    stats = switch.stats
    return {
        "state": switch.state.value,
        "restarts_ok": stats.restarts_ok,
        "restarts_failed": stats.restarts_failed,
        "rearms": stats.rearms,
        "min_margin": stats.min_margin,
        "deadline_in": switch.deadline_in,
    }


async def run(client: DelayedAsyncClient, args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise CommandError("give the command to run after --, like: -- ./backup.sh")

    def report(event: SwitchEvent) -> None:
        if args.events == "json":
            line = {"kind": event.kind.value, "message": event.message, **_status(event.switch)}
            print(json.dumps(line), file=sys.stderr, flush=True)
        elif args.events == "text":
            print(
                f"nio-delayed: switch {event.kind.value}: {event.message}",
                file=sys.stderr,
                flush=True,
            )

    manager = client.keep_alive
    manager.on_event(report)
    try:
        switch = await manager.add(
            args.room,
            args.event_type,
            args.content,
            delay=args.delay,
            state_key=args.state_key,
            restart_interval=args.interval,
            on_exit=ExitPolicy.KEEP,
        )
    except InvalidInput as exc:
        raise CommandError(str(exc)) from exc
    except KeepAliveError as exc:
        print(f"nio-delayed: {exc}; the command was not started", file=sys.stderr)
        return EXIT_ERROR

    status_task = None
    if args.events == "json":
        status_task = asyncio.create_task(_report_status(switch))
    code = await _run_command(command)
    if status_task is not None:
        status_task.cancel()
    policy = ExitPolicy(args.on_success if code == 0 else args.on_failure)
    await switch.stop(policy)
    return code


def _die_with_this_process() -> Callable[[], None] | None:
    """On Linux, a ``preexec_fn`` that has the kernel send the command SIGTERM when this wrapper
    dies (``prctl(PR_SET_PDEATHSIG)``), so a killed wrapper leaves no command running without
    its switch. Other systems have no such call: there the command outlives a killed wrapper."""
    if not sys.platform.startswith("linux"):
        return None
    # Looked up before the fork: the child, between fork and exec, only makes the call.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    wrapper = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != wrapper:  # the wrapper died before the call: act as the kernel would
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


async def _run_command(command: list[str]) -> int:
    try:
        process = await asyncio.create_subprocess_exec(
            *command, preexec_fn=_die_with_this_process()
        )
    except OSError as exc:
        print(f"nio-delayed: cannot run {command[0]!r}: {exc.strerror}", file=sys.stderr)
        return _EXIT_CANNOT_RUN
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        # Pass the signal on and let the command decide; its exit status decides the event.
        loop.add_signal_handler(sig, _forward, process, sig)
    code = await process.wait()
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as shells say


def _forward(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    if process.returncode is None:
        process.send_signal(sig)


async def _report_status(switch: DeadMansSwitch) -> None:
    while True:
        await asyncio.sleep(0.5)
        print(json.dumps({"kind": "status", **_status(switch)}), file=sys.stderr, flush=True)
