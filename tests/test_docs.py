"""The documentation: every public name has a docstring and a place in the API reference, the
pages' links and the repository files they name exist, every sample compiles and the runnable
ones that need no server run, and nothing cites files that users of the package do not have.

The docs site itself is built by ``make docs`` (Sphinx, warnings as errors, every cross-reference
and every link between pages checked). Links to other web sites are not fetched (no network
here): they are checked for a known host and a well-formed address only.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import nio_delayed
import nio_delayed.testing

from .docs_samples import PAGES, ROOT, Sample, prose, quick_start, samples

PUBLIC = [(nio_delayed, name) for name in nio_delayed.__all__] + [
    (nio_delayed.testing, name) for name in nio_delayed.testing.__all__
]
# The hosts that pages may link to; a typo in a host fails here, a typo in a path does not.
KNOWN_HOSTS = {"github.com", "spec.matrix.org", "pypi.org", "docs.python.org"}
LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")
REFERENCE = re.compile(r"^\[(?P<text>[^\]]+)\]:\s*(?P<target>\S+)\s*$", re.MULTILINE)
# A repository path in backticks: `examples/quickstart.py`, `tests/test_keepalive.py`.
REPO_PATH = re.compile(r"`(?P<path>(?:examples|tests|benchmarks|nio_delayed|docs|\.ci)/[\w./-]+)`")


def public_id(module_and_name: tuple[object, str]) -> str:
    module, name = module_and_name
    return f"{module.__name__}.{name}"  # type: ignore[attr-defined]


@pytest.mark.parametrize("public", PUBLIC, ids=public_id)
def test_every_public_name_has_a_docstring(public: tuple[object, str]) -> None:
    module, name = public
    doc = getattr(module, name).__doc__ or ""
    # A dataclass without a docstring gets its signature as one: that documents nothing.
    assert doc.strip(), f"{public_id(public)} has no docstring"
    assert not doc.startswith(f"{name}("), f"{public_id(public)} has no docstring"


def test_every_public_name_is_in_the_api_reference() -> None:
    reference = (ROOT / "docs" / "api.md").read_text()
    documented = set(re.findall(r"^\.\. auto(?:class|function):: (\S+)$", reference, re.M))
    missing = {public_id(p) for p in PUBLIC} - documented
    assert not missing, f"docs/api.md lacks {sorted(missing)}"


def test_the_package_and_its_documents_cite_no_file_users_lack() -> None:
    # Spelt in two parts, so that this file does not find itself.
    cited = re.compile(re.escape("PROTOCOL" + ".md") + "|" + re.escape("../" + "shared"))
    files = [
        *ROOT.glob("*.md"),
        *(ROOT / "docs").rglob("*.*"),
        *(ROOT / "nio_delayed").rglob("*.py"),
        *(ROOT / "examples").rglob("*.py"),
        *(ROOT / "benchmarks").glob("*.py"),
        *(ROOT / "tests").glob("*.py"),
    ]
    offenders = [
        str(f.relative_to(ROOT)) for f in files if f.is_file() and cited.search(f.read_text())
    ]
    assert not offenders, f"cite a file outside the repository: {offenders}"


def test_the_code_points_at_pages_and_headings_that_exist() -> None:
    # `docs/protocol.md, "Dialects"` in a docstring or comment: the page, and its heading.
    pointer = re.compile(r'docs/(?P<page>[\w-]+\.md)(?:,\s+"(?P<heading>[^"]+)")?')
    files = [*(ROOT / "nio_delayed").rglob("*.py"), *(ROOT / "tests").glob("*.py")]
    broken = []
    for file in files:
        for match in pointer.finditer(file.read_text()):
            page = ROOT / "docs" / match["page"]
            headings = {h.strip() for h in re.findall(r"^#+ (.+)$", page.read_text(), re.M)}
            if not page.exists() or (match["heading"] and match["heading"] not in headings):
                broken.append(f"{file.relative_to(ROOT)}: {match[0]}")
    assert not broken, broken


def github_anchors(page: Path) -> set[str]:
    """The anchors GitHub (and MyST, configured alike) gives the headings of ``page``."""
    anchors: set[str] = set()
    for line in prose(page):
        heading = re.match(r"^#{1,6} (.+)$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading[1].strip().lower()).replace(" ", "-")
            candidate, n = slug, 0
            while candidate in anchors:
                n += 1
                candidate = f"{slug}-{n}"
            anchors.add(candidate)
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_lead_somewhere(page: Path) -> None:
    text = "\n".join(prose(page))
    targets = [m["target"] for m in LINK.finditer(text)] + [
        m["target"] for m in REFERENCE.finditer(text)
    ]
    broken = []
    for target in targets:
        address = urlsplit(target)
        if address.scheme:
            if address.scheme != "https" or address.hostname not in KNOWN_HOSTS:
                broken.append(f"{target}: not an https link to a known host")
            continue
        linked = (page.parent / address.path).resolve() if address.path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif address.fragment and address.fragment not in github_anchors(linked):
            broken.append(f"{target}: no such heading in {linked.name}")
    assert not broken, broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_repository_files_named_in_the_text_exist(page: Path) -> None:
    named = {m["path"].rstrip("/") for m in REPO_PATH.finditer(page.read_text())}
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, missing


@pytest.mark.parametrize("sample", samples(), ids=lambda s: s.id)
def test_every_sample_compiles(sample: Sample) -> None:
    compile(sample.code, sample.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


# Each fragment is type-checked as the body of a coroutine that has these names at hand (other
# names it uses without defining them, ``work`` or ``password``, are left unchecked); a runnable
# sample is type-checked as the program it is.
FRAGMENT_PRELUDE = """\
from __future__ import annotations

from datetime import timedelta
from typing import Any

from nio_delayed import *  # noqa: F403
from nio_delayed import DeadMansSwitch, DelayedAsyncClient, KeepAliveManager


async def sample(
    client: DelayedAsyncClient,
    manager: KeepAliveManager,
    switch: DeadMansSwitch,
    room_id: str,
    content: dict[str, Any],
) -> None:
"""
FRAGMENT_MYPY_CONFIG = """\
[mypy]
check_untyped_defs = True
follow_untyped_imports = True
disable_error_code = name-defined
"""


def test_samples_type_check(tmp_path: Path) -> None:
    # nio-bot ships untyped classes (mypy sees them as Any): its fragment is compiled only.
    checked = [s for s in samples() if "niobot" not in s.code]
    names: dict[str, Sample] = {}
    for number, sample in enumerate(checked):
        module = tmp_path / f"sample_{number}.py"
        if sample.runnable:
            module.write_text("\n" * FRAGMENT_PRELUDE.count("\n") + sample.code)
        else:
            body = textwrap.indent(sample.code, "    ") + "    pass\n"
            module.write_text(FRAGMENT_PRELUDE + body)
        names[module.name] = sample
    (tmp_path / "mypy.ini").write_text(FRAGMENT_MYPY_CONFIG)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(tmp_path / "mypy.ini"),
         "--cache-dir", str(ROOT / ".mypy_cache" / "doc-samples"), str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    # Point at the page and line: mypy's line, less the prelude, after the fence.
    prelude = FRAGMENT_PRELUDE.count("\n")
    report = re.sub(
        r"\S*(sample_\d+\.py):(\d+)",
        lambda m: f"{names[m[1]].page.name}:{names[m[1]].line + int(m[2]) - prelude}",
        result.stdout,
    )
    assert result.returncode == 0, report


def test_the_readme_has_the_guides_quick_start() -> None:
    guide = quick_start()
    readme = [s for s in samples() if s.page.name == "README.md" and s.runnable]
    assert [s.code for s in readme] == [guide.code]


def test_the_quick_start_is_about_25_lines_and_reads_the_devservers_variables() -> None:
    from nio_delayed.cli.devserver_command import QUICK_START_VARIABLES

    sample = quick_start()
    assert len(sample.code.splitlines()) <= 30
    assert sample.reads == set(QUICK_START_VARIABLES)


@pytest.mark.parametrize(
    "sample", [s for s in samples() if s.runnable and not s.reads], ids=lambda s: s.id
)
def test_runnable_samples_that_need_no_server_run(sample: Sample, tmp_path: Path) -> None:
    script = tmp_path / "sample.py"
    script.write_text(sample.code)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
