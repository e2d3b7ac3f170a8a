"""Test helpers for bots that use nio-delayed: a fake MSC4140 homeserver with fault injection.

For a real server, see :mod:`nio_delayed.devserver`.
"""

from .fake_homeserver import FakeHomeserver, Fault, RecordedRequest

__all__ = ["FakeHomeserver", "Fault", "RecordedRequest"]
