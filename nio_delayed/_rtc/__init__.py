"""MatrixRTC membership for bots, built on the keep-alive (private: import the public names from
:mod:`nio_delayed`)."""

from .membership import RtcMembership, RtcMembershipError, check_options
from .ports import RtcClient
from .wire import LEGACY_MEMBER_TYPE, STICKY_MEMBER_TYPE, LeaveCode, RtcMode

__all__ = [
    "LEGACY_MEMBER_TYPE",
    "STICKY_MEMBER_TYPE",
    "LeaveCode",
    "RtcClient",
    "RtcMembership",
    "RtcMembershipError",
    "RtcMode",
    "check_options",
]
