"""Reading docker-compose.yml as docker compose would, without Docker: YAML (anchors and
`<<` merges, which PyYAML resolves), then `${VAR}` interpolation from a given environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

# $$ (a literal $), ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME:+alt},
# and the bare $NAME.
_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


@dataclass(frozen=True, slots=True)
class Reference:
    name: str
    op: str | None  # ":-", "-", ":?", "?", ":+", "+" or None
    arg: str | None

    @property
    def default(self) -> str | None:
        return self.arg if self.op in (":-", "-") else None


class UnsetVariable(Exception):
    """A variable without a default that the environment does not set."""


def references(text: str) -> list[Reference]:
    found = []
    for match in _REFERENCE.finditer(text):
        if match["escaped"]:
            continue
        name = match["name"] or match["bare"]
        found.append(Reference(name, match["op"], match["arg"]))
    return found


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's substitution; an unset variable without a default is an error here."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, op, arg = match["name"] or match["bare"], match["op"], match["arg"] or ""
        value = env.get(name)
        if op == ":-":
            return value or arg
        if op == "-":
            return arg if value is None else value
        if op == ":+":
            return arg if value else ""
        if op == "+":
            return "" if value is None else arg
        if value is None or (op == ":?" and not value):
            raise UnsetVariable(f"${{{name}}} is not set and has no default")
        return value

    return _REFERENCE.sub(substitute, text)


def interpolate_tree(value: object, env: Mapping[str, str]) -> object:
    if isinstance(value, dict):
        return {key: interpolate_tree(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate_tree(item, env) for item in value]
    if isinstance(value, str):
        return interpolate(value, env)
    return value


def raw() -> dict[str, object]:
    """The compose file as YAML, merges resolved, nothing interpolated."""
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def load(env: Mapping[str, str]) -> dict[str, object]:
    """The compose file as docker compose sees it with `env` (shell and `.env`) set."""
    data = interpolate_tree(raw(), env)
    assert isinstance(data, dict)
    return data


def services(data: Mapping[str, object]) -> dict[str, dict[str, object]]:
    found = data["services"]
    assert isinstance(found, dict)
    return found


def environment(service: Mapping[str, object]) -> dict[str, str]:
    """A service's `environment`, mapping or list form."""
    value = service.get("environment") or {}
    if isinstance(value, list):
        pairs = (item.partition("=") for item in value)
        return {key: val for key, _, val in pairs}
    assert isinstance(value, dict)
    return {str(key): "" if val is None else str(val) for key, val in value.items()}


@dataclass(frozen=True, slots=True)
class Mount:
    source: str
    target: str
    read_only: bool

    @property
    def is_bind(self) -> bool:
        return self.source.startswith((".", "/", "~"))


def mounts(service: Mapping[str, object]) -> list[Mount]:
    """The service's volumes, short (`src:dst[:mode]`) or long syntax."""
    entries = service.get("volumes") or []
    assert isinstance(entries, list)
    out = []
    for entry in entries:
        if isinstance(entry, str):
            parts = entry.split(":")
            modes = parts[2].split(",") if len(parts) > 2 else []
            out.append(Mount(parts[0], parts[1], "ro" in modes))
        else:
            out.append(Mount(entry["source"], entry["target"], bool(entry.get("read_only"))))
    return out


def env_example() -> dict[str, str]:
    """The variables `.env.example` documents, with the values it shows."""
    pairs = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", line.strip())
        if match:
            pairs[match[1]] = match[2]
    return pairs
