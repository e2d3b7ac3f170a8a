"""``nio-delayed status``: the switches of a running bot, read from the outside through its
metrics endpoint (nio_delayed.metrics).

The endpoint is what an operator already exposes for Prometheus: reading it needs no second
server in the bot, no credentials (it holds no secret: counts, states, rates) and no access to
the bot's process or host; and what ``status`` shows is exactly what the dashboards show.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterable
from typing import Any

import aiohttp

from .. import SwitchState
from .common import EXIT_ERROR, EXIT_OK, CommandError, print_json, print_table

__all__ = ["DEFAULT_METRICS_URL", "add_status_command"]

DEFAULT_METRICS_URL = "http://127.0.0.1:9464/metrics"
#: States of a running switch whose event may be sent while the bot is alive.
ATTENTION_STATES = tuple(
    s.value for s in (SwitchState.AT_RISK, SwitchState.PROBABLY_FIRED, SwitchState.UNAUTHORIZED)
)
Samples = dict[str, dict[str, float]]
#: The per-switch series (``register(..., per_switch=True)``), labelled by room, type and key.
_PER_SWITCH = ("switch_state", "switch_deadline_seconds")


def add_status_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "status",
        help="the switches of a running bot, read from its metrics endpoint",
        description="Read a bot's Prometheus endpoint (nio_delayed.metrics; needs "
        "nio-delayed[metrics]) and print its switches by state, the ones needing attention, "
        "restarts, 429s and the restart budget.",
    )
    parser.add_argument(
        "--metrics-url",
        default=DEFAULT_METRICS_URL,
        help=f"the bot's metrics endpoint (default: {DEFAULT_METRICS_URL})",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default: 5)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.set_defaults(run=status, needs_client=False)


async def status(args: argparse.Namespace) -> int:
    try:
        from prometheus_client.parser import text_string_to_metric_families

        from ..metrics import FIRE_KINDS, PREFIX
    except ImportError as exc:
        raise CommandError(
            "nio-delayed status needs prometheus-client: pip install 'nio-delayed[metrics]'"
        ) from exc
    text = await _fetch(args.metrics_url, args.timeout)
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise CommandError(f"{args.metrics_url} is not a metrics page: {exc}", EXIT_ERROR) from exc
    samples, switches = _samples(families, PREFIX)
    if not samples:
        raise CommandError(
            f"{args.metrics_url} has no {PREFIX}_ metrics: is the bot's keep-alive registered "
            "(nio_delayed.metrics.register)?",
            EXIT_ERROR,
        )
    result = summary(samples, FIRE_KINDS)
    result["switch_list"] = switches
    if args.json:
        print_json(result)
        return EXIT_OK
    print_table(["what", "value"], _rows(result))
    if switches:
        print()
        print_table(
            ["room", "type", "key", "state", "deadline in"],
            [
                (s["room_id"], s["event_type"], s["switch_key"], s["state"] or "-",
                 _seconds(s["deadline_seconds"]))
                for s in switches
            ],
        )  # fmt: skip
    return EXIT_OK


async def _fetch(url: str, timeout: float) -> str:
    if not url.startswith(("http://", "https://")):
        raise CommandError(f"the metrics URL {url!r} has no scheme: did you mean http://{url}?")
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url) as resp,
        ):
            if resp.status != 200:
                raise CommandError(f"{url} answered {resp.status}", EXIT_ERROR)
            return await resp.text()
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        reason = str(exc) or type(exc).__name__
        raise CommandError(f"cannot read {url}: {reason}", EXIT_ERROR) from exc


def _samples(families: Iterable[Any], prefix: str) -> tuple[Samples, list[dict[str, Any]]]:
    """The manager's samples, ``{name without the prefix: {label value or "": value}}`` (one
    label at most), and the per-switch ones as a list of switches."""
    found: Samples = {}
    switches: dict[tuple[str, str, str], dict[str, Any]] = {}
    for family in families:
        for sample in family.samples:
            if not sample.name.startswith(prefix + "_"):
                continue
            name = sample.name[len(prefix) + 1 :]
            if name in _PER_SWITCH:
                labels = sample.labels
                key = (labels["room_id"], labels["event_type"], labels["switch_key"])
                row = switches.setdefault(
                    key,
                    dict(zip(("room_id", "event_type", "switch_key"), key, strict=True)),
                )
                if name == "switch_state":
                    row["state"] = labels["state"]
                else:
                    row["deadline_seconds"] = sample.value
                continue
            label = next(iter(sample.labels.values()), "")
            found.setdefault(name, {})[label] = sample.value
    rows = [{"state": None, "deadline_seconds": None, **row} for row in switches.values()]
    # The nearest deadline first; the switches without one (not armed) last.
    rows.sort(key=lambda r: (r["deadline_seconds"] is None, r["deadline_seconds"] or 0.0))
    return found, rows


def summary(samples: Samples, fire_kinds: Iterable[str]) -> dict[str, Any]:
    """What ``status --json`` prints, from the exporter's samples."""

    def value(name: str) -> float | None:
        return samples.get(name, {}).get("")

    def count(name: str) -> int:
        return int(value(name) or 0)

    fires = set(fire_kinds)
    states = {k: int(v) for k, v in samples.get("switches", {}).items()}
    events = {k: int(v) for k, v in samples.get("switch_events_total", {}).items()}
    restarts = samples.get("restarts_total", {})
    return {
        "switches": sum(states.values()),
        "by_state": {k: v for k, v in sorted(states.items()) if v},
        "needing_attention": sum(states.get(s, 0) for s in ATTENTION_STATES),
        "over_budget": count("switches_over_budget"),
        "deliverable": count("switches_deliverable"),
        "restarts": {"ok": int(restarts.get("ok", 0)), "failed": int(restarts.get("failed", 0))},
        "rate_limited_requests": count("rate_limited_requests_total"),
        "fires_detected": sum(n for kind, n in events.items() if kind in fires),
        "capacity": {
            "restarts_per_second": value("restart_capacity_per_second"),
            "needed_per_second": value("restart_needed_per_second"),
            "planned_per_second": value("restart_planned_per_second"),
            "stretch": value("restart_interval_stretch_ratio"),
        },
        "next_deadline_seconds": value("next_deadline_seconds"),
        "events": dict(sorted(events.items())),
        "errors": {k: int(v) for k, v in sorted(samples.get("switch_errors_total", {}).items())},
    }


def _rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    capacity = result["capacity"]
    rows = [("switches", str(result["switches"]))]
    rows += [(f"  {state}", str(n)) for state, n in result["by_state"].items()]
    rows += [
        ("needing attention", f"{result['needing_attention']} ({', '.join(ATTENTION_STATES)})"),
        ("over budget", str(result["over_budget"])),
        ("deliverable if killed", f"{result['deliverable']} of {result['switches']}"),
        ("restarts ok / failed", f"{result['restarts']['ok']} / {result['restarts']['failed']}"),
        ("429 answers", str(result["rate_limited_requests"])),
        ("fires detected", str(result["fires_detected"])),
        ("restart budget", _budget(capacity)),
        ("next deadline", _seconds(result["next_deadline_seconds"])),
        ("events", _counts(result["events"])),
        ("errors", _counts(result["errors"])),
    ]
    return rows


def _budget(capacity: dict[str, float | None]) -> str:
    limit = capacity["restarts_per_second"]
    of = "no known limit" if limit is None else f"of {limit:.3g}/s"
    stretch = capacity["stretch"] or 1.0
    stretched = "" if stretch <= 1 else f", intervals stretched x{stretch:.3g}"
    return (
        f"{capacity['planned_per_second'] or 0:.3g}/s planned {of} "
        f"(needed {capacity['needed_per_second'] or 0:.3g}/s{stretched})"
    )


def _seconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in counts.items()) or "-"
