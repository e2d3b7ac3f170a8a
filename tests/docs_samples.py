"""The code samples of the README and of the docs pages (docs/*.md), as the tests see them.

A fenced block whose info string starts with ``python`` is a sample. ``python runnable`` marks a
complete program: the tests run it (against Synapse when it reads ``MATRIX_*`` variables). Any
other ``python`` block is a fragment: it must compile, top-level ``await`` allowed.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<info>[^`]*)$")
# The variables a sample reads: os.environ["NAME"], env["NAME"], os.environ.get("NAME").
_READS = re.compile(r"""\b(?:environ|env)(?:\.get\()?\[?["'](?P<name>MATRIX_[A-Z_]+)["']""")


@dataclass(frozen=True)
class Sample:
    page: Path
    line: int  # of the opening fence, 1-based
    info: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def runnable(self) -> bool:
        return self.info.split()[1:2] == ["runnable"]

    @property
    def reads(self) -> set[str]:
        """The ``MATRIX_*`` environment variables it reads."""
        return {m["name"] for m in _READS.finditer(self.code)}


def _fences(lines: list[str]) -> list[tuple[int, int, re.Match[str]]]:
    """Each fenced block as (line of its opening fence, line of its closing fence, the opening
    fence's match), 0-based."""
    found = []
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None or not match["info"].strip():
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].rstrip() != match["indent"] + match["fence"]:
            end += 1
        found.append((index, end, match))
        index = end + 1
    return found


def fenced_blocks(page: Path) -> list[Sample]:
    """Every fenced block of ``page`` (any language), dedented to its fence."""
    lines = page.read_text().splitlines()
    return [
        Sample(
            page,
            start + 1,
            match["info"].strip(),
            textwrap.dedent("\n".join(lines[start + 1 : end])) + "\n",
        )
        for start, end, match in _fences(lines)
    ]


def prose(page: Path) -> list[str]:
    """The lines of ``page`` with its fenced blocks blanked out: where ``[x](y)`` is a link and
    ``# x`` a heading."""
    lines = page.read_text().splitlines()
    for start, end, _ in _fences(lines):
        lines[start : end + 1] = [""] * (end + 1 - start)
    return lines


def samples() -> list[Sample]:
    """Every Python sample of every page."""
    return [b for page in PAGES for b in fenced_blocks(page) if b.info.split()[0] == "python"]


def quick_start() -> Sample:
    """The guide's quick start: the runnable sample that reads the ``MATRIX_*`` variables."""
    [sample] = [s for s in samples() if s.runnable and s.reads and s.page.name == "guide.md"]
    return sample
