"""Operator commands against any homeserver: support, list, show, schedule, restart, cancel,
send."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from .. import (
    DelayedAsyncClient,
    DelayedEvent,
    DelayedEventError,
    DelayedEventsListResponse,
    DelayedEventsSupportResponse,
    DelayedEventStatus,
    GetDelayedEventResponse,
    RoomPutStateDelayedResponse,
    RoomSendDelayedResponse,
)
from ..delay_id import shorten
from .common import (
    DURATION_HELP,
    EXIT_ERROR,
    EXIT_OK,
    CommandError,
    add_credential_options,
    format_ms,
    parse_content,
    parse_duration,
    print_error,
    print_json,
    print_table,
)

__all__ = ["add_operator_commands"]


def add_operator_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def command(name: str, help: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help, description=help)
        add_credential_options(parser)
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")
        parser.set_defaults(needs_client=True)
        return parser

    command(
        "support", "what the server offers: dialect, maximum delay, maximum scheduled, listing"
    ).set_defaults(run=support)
    listing = command("list", "the account's delayed events")
    listing.add_argument("--full-ids", action="store_true", help="print whole delay_ids (secrets!)")
    status = listing.add_mutually_exclusive_group()
    status.add_argument(
        "--status",
        choices=[s.value for s in DelayedEventStatus],
        help="only delayed events with this status (servers keep finalised ones for a while, "
        "Synapse not at all)",
    )
    for value in ("scheduled", "failed"):
        status.add_argument(
            f"--{value}",
            action="store_const",
            dest="status",
            const=value,
            help=f"same as --status {value}",
        )
    listing.add_argument("--room", help="only those for this room ID (!...)")
    listing.add_argument("--type", dest="event_type", help="only those of this event type")
    listing.add_argument(
        "--since",
        type=_moment(ahead=False),
        metavar="WHEN",
        help="only those due at or after WHEN (when the server was or is to send them): an ISO "
        "8601 time like 2026-11-29T14:00Z (local time without an offset), 'now', or a "
        "duration before now like 1h or 30m (+10m: after now)",
    )
    listing.add_argument(
        "--until",
        type=_moment(ahead=True),
        metavar="WHEN",
        help="only those due at or before WHEN: an ISO 8601 time, 'now', or a duration after "
        "now like 10m or 2h (--until=-1h: before now)",
    )
    listing.set_defaults(run=list_events)
    show_parser = command("show", "one delayed event")
    show_parser.add_argument("delay_id", help="a delay_id, or a unique prefix of a scheduled one")
    show_parser.set_defaults(run=show)

    schedule_parser = command("schedule", "schedule a delayed message or state event")
    schedule_parser.add_argument("--room", required=True, help="room ID (!...)")
    schedule_parser.add_argument("--type", required=True, dest="event_type", help="event type")
    schedule_parser.add_argument(
        "--content", required=True, type=parse_content, help="JSON object, or @file.json"
    )
    schedule_parser.add_argument(
        "--delay", required=True, type=parse_duration, help=f"when to send it: {DURATION_HELP}"
    )
    schedule_parser.add_argument("--state-key", help="makes it a state event ('' allowed)")
    schedule_parser.set_defaults(run=schedule)

    for name, help in [
        ("restart", "restart a delayed event's timer"),
        ("cancel", "cancel a delayed event"),
        ("send", "send a delayed event now"),
    ]:
        parser = command(name, help)
        parser.add_argument("delay_id", help="a delay_id, or a unique prefix of a scheduled one")
        parser.set_defaults(run=update, action=name)


async def support(client: DelayedAsyncClient, args: argparse.Namespace) -> int:
    resp = await client.delayed_events_support()
    if isinstance(resp, DelayedEventError):
        return print_error(resp, args.json)
    if args.json:
        print_json(
            {
                "homeserver": client.homeserver,
                "supported": resp.supported,
                "dialect": resp.dialect.value if resp.dialect else None,
                "max_delay_ms": resp.max_delay_ms,
                "max_scheduled": resp.max_scheduled,
                "listing": resp.listing.value if resp.listing else None,
                "reason": resp.reason or None,
            }
        )
    else:
        _support_text(client, resp)
    return EXIT_OK if resp.supported else EXIT_ERROR


def _support_text(client: DelayedAsyncClient, resp: DelayedEventsSupportResponse) -> None:
    rows = [("homeserver", client.homeserver), ("supported", "yes" if resp.supported else "no")]
    if resp.supported:
        max_delay = (
            "not published"
            if resp.max_delay_ms is None
            else f"{resp.max_delay_ms} ms ({format_ms(resp.max_delay_ms)})"
        )
        max_scheduled = "not published" if resp.max_scheduled is None else str(resp.max_scheduled)
        rows += [
            ("dialect", resp.dialect.value if resp.dialect else "-"),
            ("max delay", max_delay),
            ("max scheduled", max_scheduled),
            ("listing", resp.listing.value if resp.listing else "-"),
        ]
    else:
        rows.append(("why", resp.reason))
    for name, value in rows:
        print(f"{name:<14} {value}")


def _event_json(event: DelayedEvent) -> dict[str, Any]:
    return {
        "delay_id": str(event.delay_id),
        "room_id": event.room_id,
        "type": event.type,
        "state_key": event.state_key,
        "content": event.content,
        "delay_ms": event.delay_ms,
        "since_ts": event.since_ts,
        "due_ts": event.due_ts,
        "status": event.status.value,
        "event_id": event.event_id,
        "error": event.error,
        "finalised_ts": event.finalised_ts,
    }


def _due_in(event: DelayedEvent) -> str:
    if event.due_ts is None:
        return "-"
    return format_ms(max(0.0, event.due_ts - time.time() * 1000))


def _moment(*, ahead: bool) -> Callable[[str], datetime]:
    """A parser of WHEN: an ISO 8601 time, ``now``, or a duration from now, counted ``ahead``
    (``--until 10m``: the next ten minutes) or back (``--since 1h``: the last hour) unless its
    sign says otherwise."""

    def parse(text: str) -> datetime:
        given = text.strip()
        now = datetime.now(timezone.utc)
        if given.lower() == "now":
            return now
        iso = given[:-1] + "+00:00" if given.endswith(("Z", "z")) else given  # 3.10 reads no Z
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(iso).astimezone()  # no offset: the local time
        signed = given[:1] in ("+", "-")
        later = given[:1] == "+" if signed else ahead
        try:
            offset = parse_duration(given[1:] if signed else given)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a time: use an ISO 8601 time (2026-11-29T14:00Z), 'now', or a "
                "duration from now (10m, +2h, -30s)"
            ) from None
        return now + offset if later else now - offset

    return parse


async def list_events(client: DelayedAsyncClient, args: argparse.Namespace) -> int:
    if args.since is not None and args.until is not None and args.since > args.until:
        raise CommandError(
            f"--since ({args.since.isoformat(timespec='seconds')}) is after --until "
            f"({args.until.isoformat(timespec='seconds')}): nothing could match"
        )
    resp = await client.delayed_events(
        status=args.status,
        room_id=args.room,
        event_type=args.event_type,
        due_from=args.since,
        due_until=args.until,
    )
    if isinstance(resp, DelayedEventError):
        return print_error(resp, args.json)
    if args.json:
        print_json([_event_json(e) for e in resp.delayed_events])
        return EXIT_OK
    if not resp.delayed_events:
        print("no delayed events")
        return EXIT_OK
    print_table(
        ["delay id", "room", "type", "state key", "delay", "due in", "status"],
        [
            [
                str(e.delay_id) if args.full_ids else shorten(e.delay_id),
                e.room_id,
                e.type,
                "-" if e.state_key is None else repr(e.state_key),
                format_ms(e.delay_ms),
                _due_in(e),
                e.status.value,
            ]
            for e in resp.delayed_events
        ],
    )
    return EXIT_OK


async def _resolve(client: DelayedAsyncClient, given: str) -> str:
    """A whole delay_id from a unique prefix of a scheduled one (lists show only prefixes)."""
    prefix = given.rstrip("…")
    listing = await client.delayed_events()
    if not isinstance(listing, DelayedEventsListResponse):
        return given
    ids = [str(e.delay_id) for e in listing.delayed_events]
    if given in ids:
        return given
    matches = [i for i in ids if i.startswith(prefix)]
    if len(matches) > 1:
        raise CommandError(f"{given!r} matches {len(matches)} delayed events: give more of the id")
    return matches[0] if matches else given


async def show(client: DelayedAsyncClient, args: argparse.Namespace) -> int:
    resp = await client.get_delayed_event(await _resolve(client, args.delay_id))
    if isinstance(resp, DelayedEventError):
        return print_error(resp, args.json)
    assert isinstance(resp, GetDelayedEventResponse)
    event = resp.delayed_event
    if args.json:
        print_json(_event_json(event))
        return EXIT_OK
    rows = [
        ("delay id", shorten(event.delay_id)),
        ("room", event.room_id),
        ("type", event.type),
        ("state key", "-" if event.state_key is None else repr(event.state_key)),
        ("delay", format_ms(event.delay_ms)),
        ("due in", _due_in(event)),
        ("status", event.status.value),
    ]
    rows += [
        (name, value)
        for name, value in (("event id", event.event_id), ("error", event.error))
        if value
    ]
    for name, value in rows:
        print(f"{name:<10} {value}")
    print(f"{'content':<10} {event.content}")
    return EXIT_OK


async def schedule(client: DelayedAsyncClient, args: argparse.Namespace) -> int:
    resp: RoomSendDelayedResponse | RoomPutStateDelayedResponse | DelayedEventError
    if args.state_key is None:
        resp = await client.room_send_delayed(args.room, args.event_type, args.content, args.delay)
    else:
        resp = await client.room_put_state_delayed(
            args.room, args.event_type, args.content, args.delay, args.state_key
        )
    if isinstance(resp, DelayedEventError):
        return print_error(resp, args.json)
    if args.json:
        print_json({"delay_id": str(resp.delay_id), "delay_ms": resp.delay_ms})
    else:
        print(f"scheduled in {format_ms(resp.delay_ms)}; delay_id (keep it secret):")
        print(resp.delay_id)
    return EXIT_OK


async def update(client: DelayedAsyncClient, args: argparse.Namespace) -> int:
    delay_id = await _resolve(client, args.delay_id)
    call = {
        "restart": client.restart_delayed_event,
        "cancel": client.cancel_delayed_event,
        "send": client.send_delayed_event_now,
    }[args.action]
    resp = await call(delay_id)
    if isinstance(resp, DelayedEventError):
        return print_error(resp, args.json)
    done = {"restart": "restarted", "cancel": "cancelled", "send": "sent"}[args.action]
    if args.json:
        print_json({"delay_id": delay_id, "action": args.action, "ok": True})
    else:
        print(f"{done} {shorten(delay_id)}")
    return EXIT_OK
