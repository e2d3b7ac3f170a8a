"""Which dialect and listing a server has: a pure decision over what it advertised.

No I/O: the inputs are the JSON of ``/versions`` and ``/capabilities`` (``None`` when the server
did not give one) and, only where :func:`needs_probe` says so, the answer to one safe probe.
:mod:`.negotiation` gathers them. Why the probe goes one way only: the docs' protocol page
(docs/protocol.md, "Dialects").
"""

from __future__ import annotations

from dataclasses import dataclass

from ..responses import DelayedEventsSupportResponse
from ..support import (
    Dialect,
    Limits,
    parse_capabilities,
    parse_versions,
    probe_says_unstable_endpoint,
)

__all__ = ["ProbeAnswer", "choose_dialect", "needs_probe"]


@dataclass(frozen=True)
class ProbeAnswer:
    """What the probe of the merged MSC's unstable scheduling endpoint was answered."""

    status: int
    errcode: str | None = None


def _limits(capabilities: object | None) -> tuple[Limits, bool]:
    return parse_capabilities(capabilities) if capabilities is not None else (Limits(False), False)


def needs_probe(versions: object, capabilities: object | None) -> bool:
    """Whether only a probe can tell the legacy dialect from the merged MSC's unstable one."""
    advertised = parse_versions(versions)
    limits, stable_capability = _limits(capabilities)
    return (
        not limits.disabled and not (advertised.stable or stable_capability) and advertised.unstable
    )


def choose_dialect(
    versions: object, capabilities: object | None, probe: ProbeAnswer | None
) -> DelayedEventsSupportResponse:
    """The server's support. ``probe`` is needed exactly when :func:`needs_probe` says so: a
    wrong guess would make a server send a delayed event at once, so there is no default."""
    advertised = parse_versions(versions)
    limits, stable_capability = _limits(capabilities)
    if limits.disabled:
        return _unsupported("the server has delayed events turned off (max_delay_ms is 0)")
    if advertised.stable or stable_capability:
        dialect = Dialect.STABLE
    elif advertised.unstable:
        if probe is None:
            raise ValueError("only a probe can tell this server's dialect")
        dialect = (
            Dialect.UNSTABLE
            if probe_says_unstable_endpoint(probe.status, probe.errcode)
            else Dialect.LEGACY
        )
    else:
        return _unsupported("the server does not advertise delayed events (MSC4140)")
    return DelayedEventsSupportResponse(
        supported=True,
        dialect=dialect,
        max_delay_ms=limits.max_delay_ms,
        max_scheduled=limits.max_scheduled,
        listing=advertised.listing,
        sticky=advertised.sticky,
    )


def _unsupported(reason: str) -> DelayedEventsSupportResponse:
    return DelayedEventsSupportResponse(supported=False, reason=reason)
