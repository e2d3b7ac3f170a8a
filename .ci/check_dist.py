"""What the built packages carry: ``python .ci/check_dist.py dist`` (run by ``make package``).

- The wheel holds the ``nio_delayed`` package (with ``py.typed``) and its metadata, nothing else.
- The sdist holds the tests, the examples and the license, and every file that a Markdown
  document in it links to (starting from the README), so that its links work and its unit tests
  run from the unpacked sdist.
"""

from __future__ import annotations

import posixpath
import re
import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

# Relative Markdown links and images: [text](path) or ![alt](path), without a scheme or anchor.
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
SDIST_MUST_HAVE = ["LICENSE", "README.md", "CHANGELOG.md", "tests/conftest.py", "examples"]


def check_wheel(path: Path) -> list[str]:
    names = zipfile.ZipFile(path).namelist()
    problems = [
        f"wheel carries {name}"
        for name in names
        if not name.startswith("nio_delayed/") and ".dist-info/" not in name
    ]
    if "nio_delayed/py.typed" not in names:
        problems.append("wheel lacks nio_delayed/py.typed")
    if not any(name.endswith(".dist-info/licenses/LICENSE") for name in names):
        problems.append("wheel lacks the LICENSE")
    return problems


def check_sdist(path: Path) -> list[str]:
    with tarfile.open(path) as sdist:
        members = sdist.getnames()
        root = PurePosixPath(members[0]).parts[0]
        files = {str(PurePosixPath(m).relative_to(root)) for m in members if m != root}
        problems = [f"sdist lacks {name}" for name in SDIST_MUST_HAVE if name not in files]
        # Made on the user's machine: bytecode, and npm's installs (by `npm ci` from the locks).
        made_here = {"__pycache__", "node_modules"}
        problems += [
            f"sdist carries {name}" for name in files if made_here & set(PurePosixPath(name).parts)
        ]
        # Follow the links from the README through every Markdown file it reaches.
        todo, seen = ["README.md"], set()
        while todo:
            document = todo.pop()
            if document in seen or document not in files:
                continue
            seen.add(document)
            member = sdist.extractfile(f"{root}/{document}")
            assert member is not None
            for target in LINK.findall(member.read().decode()):
                if "://" in target or target.startswith("mailto:"):
                    continue
                linked = posixpath.normpath(posixpath.join(posixpath.dirname(document), target))
                if linked not in files:
                    problems.append(f"{document} links to {target}, which the sdist lacks")
                elif linked.endswith(".md"):
                    todo.append(linked)
    return problems


def main(dist: Path) -> int:
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"expected one wheel and one sdist in {dist}", file=sys.stderr)
        return 1
    problems = check_wheel(wheels[0]) + check_sdist(sdists[0])
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{wheels[0].name} and {sdists[0].name}: contents as intended")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
