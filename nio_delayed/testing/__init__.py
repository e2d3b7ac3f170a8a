"""Test helpers for bots that use nio-delayed: a fake MSC4140 homeserver with fault injection,
and a clock that moves only when the test says so.

For a real server, see :mod:`nio_delayed.devserver`.
"""

from .fake_clock import FakeClock
from .fake_homeserver import FakeHomeserver, Fault, RecordedRequest

__all__ = ["FakeClock", "FakeHomeserver", "Fault", "RecordedRequest"]
