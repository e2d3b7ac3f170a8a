"""matrix-js-sdk for the tests that run it as a peer (tests/test_js_interop.py,
tests/test_rtc_synapse.py): the scripts and the pinned install in tests/js, which `make test`
installs with `npm ci` (the Makefile's `js-peer`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

JS = Path(__file__).parent / "js"
SDK = JS / "node_modules" / "matrix-js-sdk" / "package.json"


def cannot_run() -> str | None:
    """What this machine lacks to run matrix-js-sdk, or None."""
    if shutil.which("node") is None:
        return "needs node (Node.js) to run matrix-js-sdk"
    if not SDK.exists() and shutil.which("npm") is None:
        return "needs npm to install matrix-js-sdk (tests/js/package-lock.json)"
    return None


def require_installed() -> None:
    """node and npm are here, so `make test` has installed matrix-js-sdk: a run without it is
    not `make test` (and in CI, a broken one)."""
    if not SDK.exists():
        if os.environ.get("CI"):
            pytest.fail(
                "matrix-js-sdk is not installed in tests/js: run the tests with `make test`"
            )
        pytest.skip("needs matrix-js-sdk: `make js-peer` installs it into tests/js")
