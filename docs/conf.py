"""Sphinx configuration: ``make docs`` builds this site into build/docs (warnings are errors)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # autodoc reads the checkout's package, installed or not

import nio_delayed  # noqa: E402

project = "nio-delayed"
author = "the nio-delayed authors"
copyright = "the nio-delayed authors, Apache-2.0"
release = nio_delayed.__version__
version = release

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"

# Every heading gets a GitHub-style anchor, so that `page.md#heading` links work on GitHub and
# here alike, and a link to an anchor that does not exist is a warning (an error in make docs).
myst_heading_anchors = 4

# Every cross-reference must resolve: a class, method or page that does not exist is an error.
# Names from other projects cannot be resolved offline (no intersphinx: the build must not need
# the network), so references into them are left unchecked, and only into them.
nitpicky = True
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(nio|aiohttp|asyncio|datetime|collections|typing|types|enum|signal|logging"
        r"|contextlib|pathlib|subprocess|os|_io|io|abc|random)(\..*)?",
    ),
    (
        r"py:.*",
        r"(Any|Callable|Awaitable|Mapping|Sequence|Iterator|AsyncIterator|Iterable"
        r"|AsyncIterable|Coroutine|Self|T|TypeVar|Literal|Path|timedelta|datetime|Enum|IntEnum"
        r"|StrEnum|Signals|Logger|ClientSession|ClientTimeout|web\.Request|web\.Response)",
    ),
    (r"py:.*", r"(int|float|str|bytes|bool|dict|list|tuple|set|frozenset|object|None|type)"),
]
# Private types that public signatures and bases show; they are deliberately not documented.
# Any other private name a public signature exposes is an error until it is listed here.
nitpick_ignore = [
    ("py:class", "nio_delayed._keepalive.ports.KeepAliveClient"),
    ("py:class", "nio_delayed._keepalive.switch.SwitchRuntime"),
    ("py:class", "nio_delayed._keepalive.events.Emitter"),
    ("py:class", "nio_delayed.responses._ScheduledResponse"),
    ("py:class", "nio_delayed.responses._E"),
    ("py:class", "nio_delayed.testing.loopback.LoopbackServer"),
    ("py:class", "nio_delayed._client.session.Transport"),
    ("py:class", "nio_delayed.errors.ErrorInfo"),
    ("py:class", "nio_delayed.clock.TimerHandle"),
    ("py:class", "nio_delayed.testing.fake_clock._Timer"),
]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Members without a docstring are listed too (with their signature): a reference lists them all.
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}

html_theme = "furo"
html_title = f"nio-delayed {release}"
