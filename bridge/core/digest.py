"""Digests: several alerts due for the same phones merged into one SMS. Pure.

``3 alerts: PROBLEM db01 Disk full | PROBLEM db02 Disk full | OK web03 HTTP``

Every waiting alert is listed once, in order, within ``pages`` pages. Each is
written as fully as the budget allows: its own SMS text when all waiting
alerts fit that way, else its brief line (state, host, name), shortened
further only when even that does not fit. What does not fit stays queued for
the next digest; the header then says how many there are and which part this
is (``27 alerts, 1/2: …``). A resolution travels together with its problem
when both wait, so the phone never shows as open what is already resolved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bridge.core.encoding import measure

SEPARATOR = " | "
#: the brief line's longest form, then shorter ones for storms
BRIEF_LIMITS = (None, 48, 36, 28)


@dataclass(frozen=True)
class Item:
    id: str
    text: str
    brief: str
    #: pairs a problem with its resolution ("" for none)
    key: str = ""
    resolved: bool = False


@dataclass(frozen=True)
class Series:
    """A storm's digests so far: alerts listed, and the number of the last part."""

    listed: int = 0
    part: int = 0


@dataclass(frozen=True)
class Plan:
    ids: tuple[str, ...]
    text: str
    #: set when alerts are left for a later digest
    series: Series | None


def _units(items: Sequence[Item]) -> list[list[Item]]:
    """Items in order, each problem followed by the resolutions of the same alert."""
    units: list[list[Item]] = []
    taken: set[str] = set()
    for i, item in enumerate(items):
        if item.id in taken:
            continue
        unit = [item]
        taken.add(item.id)
        if item.key and not item.resolved:
            for later in items[i + 1 :]:
                if later.key == item.key and later.id not in taken:
                    unit.append(later)
                    taken.add(later.id)
        units.append(unit)
    return units


def _line(item: Item, limit: int | None, full: bool) -> str:
    line = item.text if full else (item.brief or item.text)
    if limit is not None and len(line) > limit:
        line = line[: limit - 2].rstrip() + ".."
    return line


def _render(lines: Sequence[str], header: str) -> str:
    return header + SEPARATOR.join(lines)


def _fits(text: str, pages: int) -> bool:
    return measure(text).pages <= pages


def plan(items: Sequence[Item], pages: int, series: Series | None = None) -> Plan:
    """The digest to send now for ``items`` (waiting, oldest first), at most ``pages`` pages."""
    if not items:
        raise ValueError("a digest needs at least one item")
    previous = series or Series()
    units = _units(items)
    total = previous.listed + len(items)
    if previous.part == 0 and len(items) == 1:
        return Plan((items[0].id,), items[0].text, None)
    # 1. all of them, as fully as fits
    for full, limit in [(True, None), *((False, lim) for lim in BRIEF_LIMITS)]:
        lines = [_line(i, limit, full) for unit in units for i in unit]
        header = (
            f"{total} alerts, {previous.part + 1}/{previous.part + 1}: " if previous.part else f"{len(items)} alerts: "
        )
        text = _render(lines, header)
        if _fits(text, pages):
            return Plan(tuple(i.id for unit in units for i in unit), text, None)
    # 2. a storm: the shortest form, as many as fit; the rest wait for the next digest
    limit = BRIEF_LIMITS[-1]
    chosen: list[Item] = []
    part = previous.part + 1
    for unit in units:
        trial = chosen + unit
        header = f"{total} alerts, {part}/{part + 1}: "
        if _fits(_render([_line(i, limit, False) for i in trial], header), pages):
            chosen = trial
        else:
            break
    if not chosen:  # a single line longer than the budget: it goes alone, cut
        chosen = units[0]
    left = len(items) - len(chosen)
    per_part = max(len(chosen), 1)
    parts = part + -(-left // per_part)
    header = f"{total} alerts, {part}/{parts}: "
    text = _render([_line(i, limit, False) for i in chosen], header)
    return Plan(tuple(i.id for i in chosen), text, Series(previous.listed + len(chosen), part))
