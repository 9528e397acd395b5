"""The documentation says what the code does: the configuration reference is generated from the
config models, and every link between the pages leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.config.reference import render

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_configuration_reference_is_up_to_date() -> None:
    written = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert written == render(), "run: python -m bridge.config.reference > docs/configuration.md"


def test_every_config_key_is_explained() -> None:
    rows = [line for line in render().splitlines() if line.startswith("| `")]
    assert len(rows) > 100
    unexplained = [line.split("|")[1].strip() for line in rows if line.rstrip().endswith("|  |")]
    assert unexplained == []


def slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_between_the_pages_leads_somewhere(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"https?://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.is_file(), f"{page.name}: {target} names no file"
        if anchor and file.suffix == ".md":
            headings = re.findall(r"(?m)^#{1,4} (.+)$", file.read_text(encoding="utf-8"))
            assert anchor in {slug(h) for h in headings}, f"{page.name}: {target} names no heading"


def test_the_readme_is_short_and_starts_with_the_quick_start() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 200
    sections = re.findall(r"(?m)^## (.+)$", readme)
    assert sections == ["Quick start", "What it does", "Commands", "Documentation"]
