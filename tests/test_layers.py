"""The pure core (mail parsing, formats, validation, encoding) imports nothing that does I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BRIDGE = Path(__file__).parent.parent / "bridge"

CORE = [
    "model.py",
    "mail.py",
    "htmltext.py",
    "formats/kwtsms.py",
    "formats/address.py",
    "formats/alerts.py",
    "validate.py",
    "encoding.py",
    "phone.py",
    "digest.py",
    "intake.py",
    "routing.py",
    "access.py",
]

#: modules that reach the network, the disk, threads, processes or the clock's sleep
IO = {
    "asyncio", "socket", "ssl", "selectors", "sqlite3", "threading", "subprocess", "multiprocessing",
    "http", "urllib", "smtplib", "imaplib", "logging", "shutil", "tempfile",
    "aiohttp", "aiosmtpd", "aiosmtplib", "aioimaplib", "httpx", "psycopg", "prometheus_client", "jinja2",
    "bridge.outbox", "bridge.dispatch", "bridge.ingress", "bridge.providers", "bridge.notify", "bridge.app",
    "bridge.admin", "bridge.status", "bridge.cli", "bridge.simulator", "bridge.guard", "bridge.metrics",
}  # fmt: skip


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("module", CORE)
def test_the_pure_core_imports_no_io(module: str) -> None:
    bad = {name for name in imports(BRIDGE / module) if any(name == io or name.startswith(io + ".") for io in IO)}
    assert not bad, f"bridge/{module} imports {sorted(bad)}"


def test_the_core_list_names_real_files() -> None:
    assert all((BRIDGE / module).is_file() for module in CORE)


@pytest.mark.parametrize("module", sorted(p.name for p in (BRIDGE / "ingress").glob("*.py")))
def test_ingress_asks_nothing_of_dispatch(module: str) -> None:
    """The ways in reach balances, outcomes and the wake-up through ingress.context.Intake."""
    assert "bridge.dispatch" not in imports(BRIDGE / "ingress" / module)
