"""Which wire dialect of delayed events a server speaks, and which listing it has, read from
what it advertises.

Pure functions over the JSON of ``/versions``, ``/capabilities`` and one safe probe; the client
does the I/O. The dialects and listings are described on the docs' protocol page
(docs/protocol.md, "Dialects").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = [
    "LISTING_FLAG",
    "LISTING_STABLE_FLAG",
    "STABLE_CAPABILITY",
    "STABLE_FLAG",
    "STICKY_FLAG",
    "UNSTABLE_CAPABILITY",
    "UNSTABLE_FLAG",
    "Advertised",
    "Dialect",
    "Limits",
    "Listing",
    "ManagementForm",
    "parse_capabilities",
    "parse_versions",
    "probe_says_unstable_endpoint",
]

UNSTABLE_FLAG = "org.matrix.msc4140"
STABLE_FLAG = "org.matrix.msc4140.stable"
STABLE_CAPABILITY = "m.delayed_events"
UNSTABLE_CAPABILITY = "org.matrix.msc4140.delayed_events"
#: The listing of delayed events left MSC4140 for MSC4486, which has flags of its own.
LISTING_FLAG = "org.matrix.msc4486"
LISTING_STABLE_FLAG = "org.matrix.msc4486.stable"
#: Sticky events (MSC4354), delayed ones included.
STICKY_FLAG = "org.matrix.msc4354"


class Dialect(str, Enum):
    """The three revisions of MSC4140 found on servers."""

    #: Every released Synapse: ``?org.matrix.msc4140.delay=`` on ``/send`` and ``/state``.
    LEGACY = "legacy"
    #: The merged MSC under its unstable prefix: ``.../delayed_event/{type}/{txnId}``.
    UNSTABLE = "unstable"
    #: The merged MSC on stable paths (``/v3/rooms/.../delayed_event``, ``/v1/delayed_events``).
    STABLE = "stable"


class ManagementForm(str, Enum):
    """How restart/cancel/send are addressed."""

    #: ``POST .../delayed_events/{delay_id}/{action}`` (current MSC, Synapse >= 1.143).
    PATH = "path"
    #: ``POST .../delayed_events/{delay_id}`` with ``{"action": ...}`` (older Synapse).
    BODY = "body"


class Listing(str, Enum):
    """Where a server lists a user's delayed events."""

    #: MSC4486 on its stable path, ``GET /_matrix/client/v1/delayed_events``, with filters.
    MSC4486 = "msc4486"
    #: MSC4486 under its unstable prefix, with filters.
    MSC4486_UNSTABLE = "msc4486-unstable"
    #: The listing of MSC4140's drafts, beside the management endpoints: every released Synapse
    #: has it; a server that follows only the merged MSC4140 does not (it answers
    #: "unrecognised").
    MSC4140 = "msc4140"


@dataclass(frozen=True)
class Advertised:
    """What ``/versions`` claims."""

    stable: bool
    unstable: bool
    listing_stable: bool = False
    listing_unstable: bool = False
    sticky: bool = False

    @property
    def listing(self) -> Listing:
        if self.listing_stable:
            return Listing.MSC4486
        return Listing.MSC4486_UNSTABLE if self.listing_unstable else Listing.MSC4140


@dataclass(frozen=True)
class Limits:
    """What ``/capabilities`` says. ``present`` is False when the capability is missing."""

    present: bool
    max_delay_ms: int | None = None
    max_scheduled: int | None = None

    @property
    def disabled(self) -> bool:
        # A maximum delay of 0 means the server has the feature but turned it off.
        return self.present and self.max_delay_ms == 0


def _flag(features: Mapping[str, Any], name: str) -> bool:
    return features.get(name) is True


def parse_versions(body: object) -> Advertised:
    """Read the MSC4140, MSC4486 and MSC4354 flags from a ``/versions`` answer. Malformed parts
    count as absent."""
    features = body.get("unstable_features") if isinstance(body, Mapping) else None
    if not isinstance(features, Mapping):
        return Advertised(stable=False, unstable=False)
    return Advertised(
        stable=_flag(features, STABLE_FLAG),
        unstable=_flag(features, UNSTABLE_FLAG),
        listing_stable=_flag(features, LISTING_STABLE_FLAG),
        listing_unstable=_flag(features, LISTING_FLAG),
        sticky=_flag(features, STICKY_FLAG),
    )


def _non_negative_int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def parse_capabilities(body: object) -> tuple[Limits, bool]:
    """Limits from a ``/capabilities`` answer, and whether they came under the stable name.

    An absent field means the limit is not enforced (or not published).
    """
    capabilities = body.get("capabilities") if isinstance(body, Mapping) else None
    if not isinstance(capabilities, Mapping):
        return Limits(present=False), False
    for name, stable in ((STABLE_CAPABILITY, True), (UNSTABLE_CAPABILITY, False)):
        capability = capabilities.get(name)
        if isinstance(capability, Mapping):
            return (
                Limits(
                    present=True,
                    max_delay_ms=_non_negative_int(capability.get("max_delay_ms")),
                    max_scheduled=_non_negative_int(capability.get("max_scheduled")),
                ),
                stable,
            )
    return Limits(present=False), False


def probe_says_unstable_endpoint(status: int, errcode: str | None) -> bool:
    """Whether the merged MSC's unstable scheduling endpoint exists, from the probe's answer.

    The probe is a ``PUT`` to that endpoint with an empty body for a room that does not exist:
    a server that has the endpoint refuses it (bad body, unknown room, rate limit) and schedules
    nothing; a server without it answers "unrecognised" (404 ``M_UNRECOGNIZED`` or 405), or a
    bare 404 from a proxy. Probing this way round is safe: the opposite guess (the legacy query
    parameter on a server that does not know it) would send the event at once.
    """
    if status == 405 or errcode == "M_UNRECOGNIZED":
        return False
    return not (status == 404 and errcode is None)
