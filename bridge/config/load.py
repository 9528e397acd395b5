"""Reading a config file: YAML, ``${NAME}`` from the environment, every problem with its path."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from bridge.config.accounts import ACCOUNT_TYPES
from bridge.config.checks import _cross_check, _untagged_account_problems
from bridge.config.root import Config
from bridge.config.routes import UNION_TAGS
from bridge.core.model import Problem
from bridge.errors import ConfigError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(
    node: Any,
    path: str,
    env: Mapping[str, str],
    problems: list[Problem],
    missing: list[Problem] | None,
    fallbacks: list[str],
) -> Any:
    if isinstance(node, str):

        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                fallbacks.append(f"{path}:{name}")
                return default
            (problems if missing is None else missing).append(Problem(path, f"environment variable {name} is not set"))
            return ""

        return _ENV.sub(repl, node)
    if isinstance(node, dict):
        return {
            k: _substitute(v, f"{path}.{k}" if path else str(k), env, problems, missing, fallbacks)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_substitute(v, f"{path}.{i}", env, problems, missing, fallbacks) for i, v in enumerate(node)]
    return node


def read_env_file(path: str | Path) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd's ``EnvironmentFile=`` reads them: ``#`` and ``;``
    comments, optional ``export``, values optionally in single or double quotes."""
    values: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        line = line.removeprefix("export ").strip()
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def _pydantic_problems(exc: ValidationError) -> list[Problem]:
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = [str(part) for part in err["loc"]]
        if len(loc) >= 3 and loc[0] == "accounts" and loc[2] in ACCOUNT_TYPES:
            del loc[2]  # accounts.<name>.<provider tag>.key: the tag is pydantic's, not the file's
        if len(loc) >= 4 and loc[0] == "routes" and loc[2] == "account" and loc[3] in UNION_TAGS:
            del loc[3]  # routes.<name>.account.<name|rules>: likewise
        path = ".".join(loc) or "(top level)"
        kind = err["type"]
        if kind == "union_tag_invalid":
            problems.append(Problem(f"{path}.provider", f"must be one of {', '.join(ACCOUNT_TYPES)}"))
            continue
        if kind == "union_tag_not_found":
            problems.append(Problem(f"{path}.provider", f"is required: one of {', '.join(ACCOUNT_TYPES)}"))
            continue
        if kind == "extra_forbidden" and len(loc) == 3 and loc[0] == "accounts":
            owners = [p for p, model in ACCOUNT_TYPES.items() if loc[2] in model.model_fields]
            message = (
                f"belongs to {' and '.join(owners)} accounts, not this one's provider; remove it"
                if owners
                else "unknown key"
            )
        elif kind == "extra_forbidden":
            message = "unknown key"
        elif kind == "missing":
            message = "is required"
        else:
            message = err["msg"].removeprefix("Value error, ")
            message = message.replace("Input should be", "must be")
        problems.append(Problem(path, message))
    return problems


def load_text(
    text: str, *, env: Mapping[str, str] | None = None, source: str = "config", missing: list[Problem] | None = None
) -> Config:
    """Parse a YAML document into a :class:`Config`, or raise :class:`ConfigError`.

    ``missing``: collect environment variables that are not set there, as empty
    values, instead of failing (for commands that need no secret)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(exc, "problem", None) or "cannot be read"
        raise ConfigError([Problem(source, f"not valid YAML at {where}: {problem}")]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([Problem(source, "must be a mapping of keys (smtp:, accounts:, routes:, ...)")])
    problems: list[Problem] = []
    fallbacks: list[str] = []
    data = _substitute(raw, "", os.environ if env is None else env, problems, missing, fallbacks)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        schema = problems + _pydantic_problems(exc) + _untagged_account_problems(data)
        raise ConfigError(schema + _cross_check_without(data, exc)) from None
    problems += _cross_check(config)
    if problems:
        raise ConfigError(problems)
    config._fallbacks = tuple(fallbacks)
    return config


#: sections whose entries are checked one by one: an error in one leaves the others checked
_ENTRIES = ("accounts", "routes", "clients", "aliases", "local_users", "imap")


def _cross_check_without(data: dict[str, Any], exc: ValidationError) -> list[Problem]:
    """The cross-checks of a config the schema refused, so that every problem comes in one
    round: run on the config without the entries (an account, a route, a section) that have
    schema errors, leaving out what those entries' absence would itself cause."""
    data = dict(data)
    dropped: list[tuple[str, str]] = []  # (path, name)
    for _ in range(3):
        for err in exc.errors(include_input=False, include_url=False):
            loc = [str(part) for part in err["loc"]]
            if not loc:
                return []
            section = loc[0]
            if section in _ENTRIES and len(loc) >= 2 and isinstance(data.get(section), dict | list):
                entries = data[section]
                key: Any = int(loc[1]) if isinstance(entries, list) and loc[1].isdigit() else loc[1]
                if isinstance(entries, dict) and key in entries:
                    data[section] = {k: v for k, v in entries.items() if k != key}
                elif isinstance(entries, list) and isinstance(key, int) and key < len(entries):
                    data[section] = [v for i, v in enumerate(entries) if i != key]
                else:
                    continue
                dropped.append((f"{section}.{loc[1]}", str(key)))
            else:
                data.pop(section, None)
                if section in ("accounts", "routes"):
                    data[section] = {}
                dropped.append((section, ""))
        try:
            config = Config.model_validate(data)
        except ValidationError as again:
            exc = again
            continue
        break
    else:
        return []

    def caused(problem: Problem) -> bool:
        for path, name in dropped:
            if problem.field == path or problem.field.startswith(path + "."):
                return True
            if name and f"{name!r}" in problem.message:
                return True
            if not name and path in ("accounts", "routes"):
                return True  # every reference would be a false "no account/route named"
        return False

    return [p for p in _cross_check(config) if not caused(p)]


def load(path: str | Path, *, env: Mapping[str, str] | None = None, missing: list[Problem] | None = None) -> Config:
    """Read and parse the config file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(str(path), f"cannot be read: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem(str(path), "is not UTF-8 text")]) from None
    return load_text(text, env=env, source=str(path), missing=missing)
