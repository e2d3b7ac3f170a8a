"""``nio_delayed.__version__`` and ``nio-delayed --version`` say which release is installed."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import nio_delayed


def test_version_is_the_installed_distributions() -> None:
    assert nio_delayed.__version__ == version("nio-delayed")


def test_version_falls_back_when_the_package_was_never_installed() -> None:
    code = (
        "import importlib.metadata as metadata\n"
        "def missing(name):\n"
        "    raise metadata.PackageNotFoundError(name)\n"
        "metadata.version = missing\n"
        "import nio_delayed\n"
        "print(nio_delayed.__version__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "0+unknown"


def test_the_command_reports_the_same_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nio_delayed", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == f"nio-delayed {nio_delayed.__version__}"
