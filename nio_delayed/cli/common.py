"""What the commands share: credentials, durations, content, output and exit codes."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from .. import DelayedAsyncClient, DelayedEventError, ErrorKind
from ..validation import MIN_SWITCH_DELAY_MS

__all__ = [
    "DURATION_HELP",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "Credentials",
    "add_credential_options",
    "connect",
    "exit_code_for",
    "parse_content",
    "parse_duration",
    "parse_switch_delay",
    "print_error",
    "print_json",
    "print_table",
]

EXIT_OK = 0
EXIT_ERROR = 1  # the server or the network said no
EXIT_USAGE = 2  # the command line is wrong (as argparse does)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
#: How every duration option is written; said in each option's help.
DURATION_HELP = "a number with its unit: 1500ms, 30s, 2m, 1h"


class CommandError(Exception):
    """A problem to report in one line, with the exit code to leave with."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def parse_duration(text: str) -> timedelta:
    """``"1500ms"``, ``"30s"``, ``"2m"``, ``"1h"``. The unit is required: a bare number is
    refused, since the library once read one as milliseconds and this command as seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: use {DURATION_HELP}")
    number, unit = match.groups()
    if unit is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no unit: write {number}s for seconds or {number}ms for milliseconds "
            f"({DURATION_HELP})"
        )
    seconds = float(number) * _UNIT_SECONDS[unit]
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration must be positive")
    return timedelta(milliseconds=round(seconds * 1000))


def parse_switch_delay(text: str) -> timedelta:
    """A dead-man's switch's delay: a duration of at least 1 s (the library's minimum)."""
    delay = parse_duration(text)
    if delay < timedelta(milliseconds=MIN_SWITCH_DELAY_MS):
        raise argparse.ArgumentTypeError(
            f"{text!r} is too short for a dead-man's switch: at least "
            f"{MIN_SWITCH_DELAY_MS // 1000}s, or its restarts cannot cross a network in time"
        )
    return delay


def parse_content(text: str) -> dict[str, Any]:
    """A JSON object, given inline or as ``@path/to/file.json``."""
    source = text
    if text.startswith("@"):
        try:
            source = Path(text[1:]).read_text()
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: {exc.strerror}") from exc
    try:
        content = json.loads(source)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"content is not valid JSON: {exc}") from exc
    if not isinstance(content, dict):
        raise argparse.ArgumentTypeError('content must be a JSON object, like \'{"body": "hi"}\'')
    return content


@dataclass(frozen=True)
class Credentials:
    homeserver: str
    user_id: str
    access_token: str

    def __repr__(self) -> str:
        return f"Credentials(homeserver={self.homeserver!r}, user_id={self.user_id!r})"


def add_credential_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "credentials (or MATRIX_HOMESERVER, MATRIX_USER_ID, MATRIX_ACCESS_TOKEN)"
    )
    group.add_argument("--homeserver", help="homeserver URL, like https://matrix.example.org")
    group.add_argument("--user-id", help="the account's Matrix ID, like @bot:example.org")
    group.add_argument(
        "--access-token",
        help="the account's access token (prefer MATRIX_ACCESS_TOKEN: flags show in `ps`)",
    )


def credentials(args: argparse.Namespace) -> Credentials:
    values = {
        "homeserver": args.homeserver or os.environ.get("MATRIX_HOMESERVER"),
        "user_id": args.user_id or os.environ.get("MATRIX_USER_ID"),
        "access_token": args.access_token or os.environ.get("MATRIX_ACCESS_TOKEN"),
    }
    missing = [name for name, value in values.items() if not value]
    if missing:
        flags = ", ".join(
            f"--{name.replace('_', '-')} (or MATRIX_{name.upper()})" for name in missing
        )
        raise CommandError(f"missing credentials: {flags}")
    homeserver = str(values["homeserver"])
    if not homeserver.startswith(("https://", "http://")):
        # Without a scheme the request would fail deep in aiohttp with a puzzling message.
        raise CommandError(
            f"the homeserver URL {homeserver!r} has no scheme: did you mean https://{homeserver}?"
        )
    return Credentials(**values)  # type: ignore[arg-type]


def connect(args: argparse.Namespace) -> DelayedAsyncClient:
    creds = credentials(args)
    client = DelayedAsyncClient(creds.homeserver.rstrip("/"), creds.user_id)
    client.restore_login(creds.user_id, "nio-delayed-cli", creds.access_token)
    return client


def exit_code_for(error: DelayedEventError) -> int:
    return (
        EXIT_USAGE if error.kind is ErrorKind.INVALID and error.http_status is None else EXIT_ERROR
    )


def error_json(error: DelayedEventError) -> dict[str, Any]:
    return {
        "error": {
            "kind": error.kind.value,
            "message": error.message,
            "errcode": error.errcode,
            "http_status": error.http_status,
            "retry_after_ms": error.retry_after_ms,
            "max_delay_ms": error.max_delay_ms,
        }
    }


def print_error(error: DelayedEventError, as_json: bool) -> int:
    """Report ``error`` on stderr (as JSON, or as text); returns the exit code. Stdout holds
    only results, so that ``nio-delayed ... --json | jq`` never mistakes an error for one."""
    if as_json:
        print(json.dumps(error_json(error), indent=2, sort_keys=True), file=sys.stderr)
    else:
        where = " ".join(str(p) for p in (error.http_status, error.errcode) if p)
        hint = ""
        if error.retry_after_ms is not None:
            hint = f" (retry after {error.retry_after_ms} ms)"
        if error.max_delay_ms is not None:
            hint = f" (the server's maximum is {error.max_delay_ms} ms)"
        print(
            f"error [{error.kind.value}]{' ' + where if where else ''}: {error.message}{hint}",
            file=sys.stderr,
        )
    return exit_code_for(error)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    print("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def format_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"
