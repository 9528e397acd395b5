"""The configuration reference, generated from the config models: every key, its type, its
default and what it does (from the ``#:`` comment above the field).

``python -m bridge.config.reference > docs/configuration.md`` writes it; a test fails when the
file in ``docs/`` differs from what the models say.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Iterator
from enum import Enum
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from bridge.config.accounts import AccountConfig, KwtsmsHttpAccount, KwtsmsSmtpAccount, OpentechHttpAccount
from bridge.config.root import Config

HEADER = """# Configuration reference

Generated from the config models (`bridge/config/`) by
`python -m bridge.config.reference > docs/configuration.md`; a test fails when this file
is out of date. `${NAME}` anywhere in a string takes text from the environment,
`${NAME:-default}` gives a fallback. `sms-bridge check-config -c FILE` lists every problem
with its path.

"""

#: sections in the order a config file usually has them
ORDER = (
    "smtp",
    "lmtp",
    "imap",
    "sendmail",
    "accounts",
    "routes",
    "aliases",
    "local_users",
    "clients",
    "numbers",
    "queue",
    "dispatch",
    "notify",
    "admin",
    "logging",
    "simulator",
)
PROVIDERS = (KwtsmsHttpAccount, OpentechHttpAccount, KwtsmsSmtpAccount)


def comments(model: type[BaseModel]) -> dict[str, str]:
    """Each field's ``#:`` comment, as written above it in the model's source."""
    found: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):  # pragma: no cover  (the models are always in source form)
            continue
        pending: list[str] = []
        for line in source.splitlines():
            stripped = line.strip()
            if stripped.startswith("#:"):
                pending.append(stripped[2:].strip())
                continue
            match = re.match(r"(\w+)\s*:", stripped)
            if match and pending and line.startswith("    ") and not line.startswith("     "):
                found[match.group(1)] = _markdown(" ".join(pending))
            pending = []
    return found


def type_text(hint: Any) -> str:
    """A field's type in plain words."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        if args[0] is str and any("check_listen" in repr(a) for a in args[1:]):
            return "host:port"
        return type_text(args[0])
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [type_text(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(parts))
    if origin is tuple:
        return f"list of {type_text(args[0])}"
    if origin is dict:
        return f"mapping of {type_text(args[1])}"
    if hint is SecretStr:
        return "secret"
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return "mapping"
    if isinstance(hint, type) and issubclass(hint, Enum):
        return " \\| ".join(f"`{m.value}`" for m in hint)
    return {str: "text", int: "integer", float: "number", bool: "true/false"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def default_text(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if isinstance(value, BaseModel):
        return "see below" if type(value).model_fields else "—"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        if not value:
            return "none"
        return ", ".join(f"`{_plain(v)}`" for v in value)
    if isinstance(value, dict):
        return "none" if not value else ", ".join(f"`{k}`" for k in value)
    if value is PydanticUndefined:  # pragma: no cover
        return "required"
    return f"`{_plain(value)}`"


def _plain(value: Any) -> str:
    if isinstance(value, BaseModel):
        return ", ".join(f"{k}: {_plain(v)}" for k, v in value.model_dump().items() if v not in (None, False, ()))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _inner_model(hint: Any) -> tuple[str, type[BaseModel]] | None:
    """(path suffix, model) for a field whose values are config models (a mapping, a list, one)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        return _inner_model(args[0])
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            found = _inner_model(arg)
            if found is not None:
                return found
        return None
    if origin is tuple and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return ".N", args[0]
    if origin is dict and isinstance(args[1], type) and issubclass(args[1], BaseModel):
        return ".<name>", args[1]
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return "", hint
    return None


def rows(model: type[BaseModel], path: str, skip: frozenset[str] = frozenset()) -> Iterator[str]:
    """One table row per key of ``model`` under ``path``, nested models after their key."""
    notes = comments(model)
    hints = typing.get_type_hints(model, include_extras=True)
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        hint = hints[name]
        key = f"{path}.{name}" if path else name
        yield f"| `{key}` | {type_text(hint)} | {_cell(default_text(field))} | {_cell(notes.get(name, ''))} |"
        inner = _inner_model(hint)
        if inner is not None and inner[1] is not AccountConfig and key != "accounts.<name>":
            nested.append((key + inner[0], inner[1]))
    for key, inner_model in nested:
        yield from rows(inner_model, key)


def _doc(model: type[BaseModel]) -> str:
    """The model's own docstring (not one it inherits), as a paragraph."""
    doc = model.__dict__.get("__doc__")
    return _markdown(inspect.cleandoc(doc)) + "\n\n" if doc else ""


def _markdown(text: str) -> str:
    """reStructuredText's ````code```` and ``:class:`X```` as Markdown's ```code```."""
    return re.sub(r"``([^`]+)``", r"`\1`", re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text))


def _cell(text: str) -> str:
    """Text for a table cell: a ``|`` in it would end the cell."""
    return text.replace("|", "\\|")


TABLE = "| key | type | default | what it does |\n|---|---|---|---|\n"


def render() -> str:
    """The whole reference, as Markdown."""
    out = [HEADER]
    hints = typing.get_type_hints(Config, include_extras=True)
    for section in ORDER:
        field = Config.model_fields[section]
        out.append(f"## `{section}`\n\n")
        note = comments(Config).get(section)
        if note:
            out.append(note + "\n\n")
        if section == "accounts":
            out.append(_doc(AccountConfig))
            out.append("Every account:\n\n" + TABLE)
            out.extend(line + "\n" for line in rows(AccountConfig, "accounts.<name>", frozenset({"provider"})))
            for provider in PROVIDERS:
                name = get_args(provider.model_fields["provider"].annotation)[0]
                own = frozenset(AccountConfig.model_fields) - {"provider"}
                out.append(f"\n`provider: {name}` adds:\n\n" + TABLE)
                out.extend(line + "\n" for line in rows(provider, "accounts.<name>", own | {"provider"}))
            out.append("\n")
            continue
        inner = _inner_model(hints[section])
        if inner is None:
            out.append(TABLE + f"| `{section}` | {type_text(hints[section])} | {default_text(field)} | |\n\n")
            continue
        suffix, model = inner
        out.append(_doc(model) + TABLE)
        out.extend(line + "\n" for line in rows(model, section + suffix))
        out.append("\n")
    return "".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
