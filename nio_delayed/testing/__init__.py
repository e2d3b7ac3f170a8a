"""Test helpers for bots that use nio-delayed: a fake MSC4140 homeserver with fault injection,
a fault-injecting proxy to put in front of a real one, and a clock that moves only when the
test says so.

For a real server, see :mod:`nio_delayed.devserver`.
"""

from .fake_clock import FakeClock
from .fake_homeserver import FakeHomeserver, Fault, RecordedRequest
from .fault_proxy import FaultProxy, ProxiedRequest, ProxyFaults

__all__ = [
    "FakeClock",
    "FakeHomeserver",
    "Fault",
    "FaultProxy",
    "ProxiedRequest",
    "ProxyFaults",
    "RecordedRequest",
]
