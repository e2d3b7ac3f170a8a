"""The package's layering, read from its source with ``ast``: dependencies go one way, from the
protocol up through the client, the keep-alive and the MatrixRTC membership built on it to the
mixin that assembles them.

Each rule is a function of the import graph, so the tests below can show it catches a wrong
import in a made-up graph as well as pass on the real one.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import nio_delayed

ROOT = "nio_delayed"
PACKAGE_DIR = Path(nio_delayed.__file__).parent
#: Modules that know the protocol and nothing else: no client, no keep-alive.
PURE = {
    f"{ROOT}.{name}"
    for name in (
        "clock",
        "delay_id",
        "errors",
        "models",
        "request_builders",
        "responses",
        "support",
        "transport",
        "validation",
        "wire",
        "limits",
    )
}
KEEPALIVE = f"{ROOT}._keepalive"
#: MatrixRTC membership: on top of the keep-alive, below the mixin.
RTC = f"{ROOT}._rtc"
CLIENT = f"{ROOT}.mixin"
#: The parts the mixin assembles the client from.
CLIENT_PARTS = f"{ROOT}._client"
CLI = f"{ROOT}.cli"


@dataclass(frozen=True)
class Import:
    """``source`` imports ``names`` from ``target`` (no names: ``import target``)."""

    source: str
    target: str
    names: tuple[str, ...] = ()


def _module_name(path: Path, base: Path) -> str:
    parts = path.relative_to(base).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, base: Path = PACKAGE_DIR.parent) -> Iterator[Import]:
    """The imports of the module at ``path`` (``base``: the directory holding the package)."""
    source = _module_name(path, base)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    # ast.walk also finds the imports under ``if TYPE_CHECKING:`` and inside functions.
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(source, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level > 1:
                base = base[: -(node.level - 1)]
            prefix = ".".join(base) if node.level else ""
            target = ".".join(part for part in (prefix, node.module or "") if part)
            yield Import(source, target, tuple(alias.name for alias in node.names))


def package_imports() -> list[Import]:
    """Every import inside the package of another of its modules."""
    return [
        edge
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        for edge in _imports(path)
        if _within(edge.target, ROOT)
    ]


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _targets(edge: Import) -> list[str]:
    """The modules an import loads: ``from pkg import name`` may name a submodule."""
    return [
        edge.target,
        *(f"{edge.target}.{name}" for name in edge.names if _is_module(f"{edge.target}.{name}")),
    ]


def _is_module(name: str) -> bool:
    path = PACKAGE_DIR.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


# -- the rules -----------------------------------------------------------------------------


def pure_modules_import_only_pure_modules(edges: list[Import]) -> list[str]:
    return [
        f"{edge.source} imports {edge.target}"
        for edge in edges
        if edge.source in PURE and edge.target not in PURE
    ]


def _beyond_protocol(edges: list[Import], package: str) -> list[str]:
    """Imports by ``package`` of anything but the protocol modules and ``package`` itself."""
    return [
        f"{edge.source} imports {edge.target}"
        for edge in edges
        if _within(edge.source, package)
        and not (edge.target in PURE or _within(edge.target, package))
    ]


def keepalive_knows_the_client_only_by_its_port(edges: list[Import]) -> list[str]:
    """The keep-alive imports the protocol modules and itself, never the client (not even for
    type checking): it reaches the client through the ``KeepAliveClient`` protocol."""
    return _beyond_protocol(edges, KEEPALIVE)


def _insides_stay_inside(edges: list[Import], package: str) -> list[str]:
    """Imports of ``package``'s modules from outside it (only its facade may be imported)."""
    return [
        f"{edge.source} imports {target}"
        for edge in edges
        if not _within(edge.source, package)
        for target in _targets(edge)
        if target.startswith(package + ".")
    ]


def keepalive_insides_stay_inside(edges: list[Import]) -> list[str]:
    """Outside the keep-alive, only its package (the facade) is imported, not its modules."""
    return _insides_stay_inside(edges, KEEPALIVE)


def rtc_knows_the_keepalive_facade_and_the_client_by_its_port(edges: list[Import]) -> list[str]:
    """The MatrixRTC layer imports the protocol modules, the keep-alive's facade and itself:
    never the mixin or the client's parts (it reaches the client through ``RtcClient``)."""
    return [
        problem
        for problem in _beyond_protocol(edges, RTC)
        if not problem.endswith(f" imports {KEEPALIVE}")
    ]


def rtc_insides_stay_inside(edges: list[Import]) -> list[str]:
    """Outside the MatrixRTC layer, only its package (the facade) is imported."""
    return _insides_stay_inside(edges, RTC)


def client_parts_know_only_the_protocol(edges: list[Import]) -> list[str]:
    """The client's parts import the protocol modules and each other: not the mixin that
    assembles them, not the keep-alive built on them."""
    return _beyond_protocol(edges, CLIENT_PARTS)


def client_parts_are_assembled_only_by_the_mixin(edges: list[Import]) -> list[str]:
    return [
        f"{edge.source} imports {target}"
        for edge in edges
        if not _within(edge.source, CLIENT_PARTS) and edge.source != CLIENT
        for target in _targets(edge)
        if _within(target, CLIENT_PARTS)
    ]


def cli_uses_the_public_api(edges: list[Import]) -> list[str]:
    """The command line is a user of the library: what ``nio_delayed`` exports comes from
    ``nio_delayed``; anything else from a public module; nothing private."""
    exported = set(nio_delayed.__all__)
    problems = []
    for edge in edges:
        if not _within(edge.source, CLI) or _within(edge.target, CLI):
            continue
        if any(part.startswith("_") for part in edge.target.split(".")):
            problems.append(f"{edge.source} imports the private {edge.target}")
        elif edge.target != ROOT and exported.intersection(edge.names):
            names = ", ".join(sorted(exported.intersection(edge.names)))
            problems.append(f"{edge.source} imports {names} from {edge.target}, not {ROOT}")
    return problems


RULES: list[Callable[[list[Import]], list[str]]] = [
    pure_modules_import_only_pure_modules,
    keepalive_knows_the_client_only_by_its_port,
    keepalive_insides_stay_inside,
    rtc_knows_the_keepalive_facade_and_the_client_by_its_port,
    rtc_insides_stay_inside,
    client_parts_know_only_the_protocol,
    client_parts_are_assembled_only_by_the_mixin,
    cli_uses_the_public_api,
]


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
def test_the_package_keeps_its_layers(rule: Callable[[list[Import]], list[str]]) -> None:
    assert rule(package_imports()) == []


def test_the_graph_is_read_from_the_source() -> None:
    edges = package_imports()
    assert any(
        edge.source == CLIENT and edge.target == KEEPALIVE and "KeepAliveManager" in edge.names
        for edge in edges
    )
    assert Import(f"{KEEPALIVE}.manager", f"{KEEPALIVE}.ports", ("KeepAliveClient",)) in edges
    assert Import(CLIENT, f"{CLIENT_PARTS}.calls", ("DelayedCalls",)) in edges
    assert Import(f"{RTC}.ports", KEEPALIVE, ("KeepAliveManager",)) in edges


@pytest.mark.parametrize(
    ("rule", "wrong"),
    [
        (pure_modules_import_only_pure_modules, Import(f"{ROOT}.responses", CLIENT)),
        (pure_modules_import_only_pure_modules, Import(f"{ROOT}.wire", KEEPALIVE)),
        (keepalive_knows_the_client_only_by_its_port, Import(f"{KEEPALIVE}.ports", CLIENT)),
        (
            keepalive_knows_the_client_only_by_its_port,
            Import(f"{KEEPALIVE}.arming", ROOT, ("mixin",)),
        ),
        (keepalive_insides_stay_inside, Import(CLIENT, f"{KEEPALIVE}.budget")),
        (keepalive_insides_stay_inside, Import(f"{CLI}.run", KEEPALIVE, ("switch",))),
        (keepalive_knows_the_client_only_by_its_port, Import(f"{KEEPALIVE}.manager", RTC)),
        (rtc_knows_the_keepalive_facade_and_the_client_by_its_port, Import(f"{RTC}.ports", CLIENT)),
        (
            rtc_knows_the_keepalive_facade_and_the_client_by_its_port,
            Import(f"{RTC}.membership", f"{CLIENT_PARTS}.calls"),
        ),
        (
            rtc_knows_the_keepalive_facade_and_the_client_by_its_port,
            Import(f"{RTC}.membership", f"{KEEPALIVE}.switch"),
        ),
        (rtc_insides_stay_inside, Import(CLIENT, f"{RTC}.membership")),
        (client_parts_know_only_the_protocol, Import(f"{CLIENT_PARTS}.calls", RTC)),
        (client_parts_know_only_the_protocol, Import(f"{CLIENT_PARTS}.calls", CLIENT)),
        (client_parts_know_only_the_protocol, Import(f"{CLIENT_PARTS}.state", KEEPALIVE)),
        (
            client_parts_are_assembled_only_by_the_mixin,
            Import(f"{KEEPALIVE}.arming", CLIENT_PARTS, ("calls",)),
        ),
        (
            client_parts_are_assembled_only_by_the_mixin,
            Import(f"{ROOT}.testing.fake_homeserver", f"{CLIENT_PARTS}.session"),
        ),
        (cli_uses_the_public_api, Import(f"{CLI}.run", KEEPALIVE, ("KeepAliveManager",))),
        (cli_uses_the_public_api, Import(f"{CLI}.run", CLIENT, ("DelayedAsyncClient",))),
    ],
)
def test_a_wrong_import_is_caught(rule: Callable[[list[Import]], list[str]], wrong: Import) -> None:
    assert rule([*package_imports(), wrong]) != []


def test_an_import_under_type_checking_counts(tmp_path: Path) -> None:
    module = tmp_path / ROOT / "_keepalive" / "sneaky.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..mixin import X\n"
    )
    edges = [edge for edge in _imports(module, tmp_path) if _within(edge.target, ROOT)]
    assert edges == [Import(f"{KEEPALIVE}.sneaky", CLIENT, ("X",))]
    assert keepalive_knows_the_client_only_by_its_port(edges) != []
