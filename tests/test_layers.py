"""The folder tree is the architecture, and these tests hold the code to it.

- ``bridge/core/``: the pure core (mail parsing, formats, validation, encoding): no I/O;
- ``bridge/config/``: the config models, pure as well;
- the I/O shell around them: ``outbox/``, ``relay/``, ``providers/``, ``runtime/``, ``dispatch/``,
  ``ingress/``, ``notify/``, ``web/``; then ``app/`` wires them and ``cli/`` starts it all.

Imports are read from the source (every ``import``, at module level or inside a function),
so that a cycle cannot hide behind a function-level import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BRIDGE = Path(__file__).parent.parent / "bridge"

#: modules that reach the network, the disk, threads, processes or the clock's sleep
IO = {
    "asyncio", "socket", "ssl", "selectors", "sqlite3", "threading", "subprocess", "multiprocessing",
    "http", "urllib", "smtplib", "imaplib", "logging", "shutil", "tempfile",
    "aiohttp", "aiosmtpd", "aiosmtplib", "aioimaplib", "httpx", "psycopg", "prometheus_client", "jinja2",
    "bridge.outbox", "bridge.dispatch", "bridge.ingress", "bridge.providers", "bridge.notify", "bridge.app",
    "bridge.web", "bridge.cli", "bridge.simulator", "bridge.runtime",
}  # fmt: skip

BELOW_WIRING = {
    "core",
    "config",
    "outbox",
    "relay",
    "providers",
    "runtime",
    "notify",
    "dispatch",
    "ingress",
    "web",
    "simulator",
}

#: each room, and the rooms it may import (besides itself, ``bridge.errors`` and ``bridge``'s version)
ROOMS: dict[str, set[str]] = {
    "core": {"config"},
    "config": {"core"},
    "outbox": {"core", "config"},
    "relay": {"core", "config"},
    "providers": {"core", "config", "relay"},
    "runtime": {"core", "config", "outbox"},
    "notify": {"core", "config", "outbox", "runtime", "relay"},
    "dispatch": {"core", "config", "outbox", "providers", "runtime", "notify"},
    "ingress": {"core", "config", "outbox", "runtime", "notify"},
    "web": {"core", "config", "outbox", "runtime", "ingress", "notify"},
    # the wiring may import every room below it; the command line, the wiring too (not the web part)
    "app": BELOW_WIRING,
    "cli": (BELOW_WIRING - {"web"}) | {"app"},
    "simulator": set(),
}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code."""
    found: set[str] = set()
    package = ".".join(path.relative_to(BRIDGE.parent).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            # `from bridge import outbox` imports bridge.outbox
            found.update(f"{base}.{alias.name}" for alias in node.names if base in {"bridge", "bridge.core"})
    return found


def room_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "bridge" or len(parts) < 2:
        return None
    return parts[1].removesuffix(".py")


def sources() -> list[Path]:
    return sorted(BRIDGE.rglob("*.py"))


def rel(path: Path) -> str:
    return str(path.relative_to(BRIDGE.parent))


CORE = sorted(rel(p) for p in (BRIDGE / "core").rglob("*.py")) + sorted(
    rel(p) for p in (BRIDGE / "config").rglob("*.py")
)


@pytest.mark.parametrize("module", CORE)
def test_the_pure_core_imports_no_io(module: str) -> None:
    found = imports(BRIDGE.parent / module)
    bad = {name for name in found if any(name == io or name.startswith(io + ".") for io in IO)}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_the_core_is_where_the_pure_modules_are() -> None:
    names = {Path(m).name for m in CORE}
    assert {"mail.py", "validate.py", "encoding.py", "phone.py", "kwtsms.py", "alerts.py"} <= names


def test_the_top_level_holds_packages_and_the_exception_tree() -> None:
    """``bridge/`` itself shows the architecture: its rooms, the exception tree, the simulator."""
    loose = sorted(p.name for p in BRIDGE.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "errors.py", "simulator.py"]
    assert set(ROOMS) - {"simulator"} == {p.name for p in BRIDGE.iterdir() if (p / "__init__.py").is_file()}


@pytest.mark.parametrize("path", [rel(p) for p in sources()])
def test_each_room_imports_only_the_rooms_below_it(path: str) -> None:
    here = room_of(path.replace("/", ".").removesuffix(".py"))
    allowed = ROOMS.get(here or "", set()) | {here, "errors", "__version__", None}
    if here in {"__init__", "__main__", "errors"}:
        allowed = set(ROOMS) | {"errors", None}
    wrong = {m for m in imports(BRIDGE.parent / path) if room_of(m) not in allowed and m.startswith("bridge.")}
    assert not wrong, f"{path} imports {sorted(wrong)}"


def test_providers_import_nothing_of_the_outbox() -> None:
    for path in (BRIDGE / "providers").rglob("*.py"):
        assert not {m for m in imports(path) if m.startswith("bridge.outbox")}, rel(path)


INGRESSES = ("smtp", "imap", "webhook")


@pytest.mark.parametrize("path", sorted(rel(p) for p in (BRIDGE / "ingress").rglob("*.py")))
def test_no_ingress_imports_another(path: str) -> None:
    """SMTP (with LMTP, its variant), IMAP and the webhook share what they need through ``ingress``'s common
    modules (acceptance, refusals, fingerprints), never through each other."""
    mine = next((name for name in INGRESSES if Path(path).stem.startswith(name) or f"/{name}/" in path), None)
    others = {
        m
        for m in imports(BRIDGE.parent / path)
        for name in INGRESSES
        if name != mine and (m == f"bridge.ingress.{name}" or m.startswith(f"bridge.ingress.{name}"))
    }
    assert not others, f"{path} imports {sorted(others)}"


@pytest.mark.parametrize("path", sorted(rel(p) for p in (BRIDGE / "web").rglob("*.py")))
def test_the_web_part_imports_nothing_of_dispatch(path: str) -> None:
    """The status page and admin read the runtime (metrics, balances, breakers, outcomes), which
    dispatch writes; they never reach into the dispatcher."""
    assert not {m for m in imports(BRIDGE.parent / path) if m.startswith("bridge.dispatch")}


@pytest.mark.parametrize("path", sorted(rel(p) for p in (BRIDGE / "ingress").rglob("*.py")))
def test_ingress_asks_nothing_of_dispatch(path: str) -> None:
    """The ways in reach balances, outcomes and the wake-up through the runtime."""
    assert not {m for m in imports(BRIDGE.parent / path) if m.startswith("bridge.dispatch")}


def test_no_import_cycle_between_modules() -> None:
    """No cycle among bridge's modules, counting the imports inside functions (a cycle hidden
    behind a function-level import is still a cycle)."""
    modules = {rel(p).removesuffix(".py").replace("/", ".").removesuffix(".__init__"): p for p in sources()}
    graph = {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        seen[name] = 1
        stack.append(name)
        for nxt in sorted(graph[name]):
            if seen.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in seen:
                visit(nxt)
        stack.pop()
        seen[name] = 2

    for name in sorted(graph):
        if name not in seen:
            visit(name)


def test_the_simulator_is_independent() -> None:
    """The simulator reads the providers' documents on its own: it shares no code with the bridge,
    so a misreading in the bridge cannot hide in it."""
    assert not {m for m in imports(BRIDGE / "simulator.py") if m.startswith("bridge")}
