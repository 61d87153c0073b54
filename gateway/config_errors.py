"""Config errors that say where: the line and the dotted field path of each problem.

pydantic reports paths in the parsed data; these helpers find the YAML node at that path
(for its line) and drop the discriminator tags pydantic inserts for tagged unions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import yaml
from pydantic import ValidationError

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    path: str  # dotted, e.g. "experts.1.base_url"; "" for the whole document
    message: str
    line: int | None = None  # 1-based

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line is not None else source
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class ConfigError(Exception):
    def __init__(self, source: str, issues: Sequence[ConfigIssue]) -> None:
        self.source = source
        self.issues = tuple(issues)
        super().__init__("\n".join(issue.render(source) for issue in self.issues))


def issue_at(root: yaml.Node, loc: Loc, message: str) -> ConfigIssue:
    """A problem at `loc`, with the line of the deepest node on it."""
    return ConfigIssue(_dotted(loc), message, _line(root, loc))


def issues_from(exc: ValidationError, root: yaml.Node) -> list[ConfigIssue]:
    issues = []
    for error in exc.errors(include_url=False):
        loc = _strip_union_tags(tuple(error["loc"]), root)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "union_tag_invalid":
            message = f"unknown kind; expected one of {error['ctx']['expected_tags']}"
        elif error["type"] == "union_tag_not_found":
            message = "missing 'kind'"
        issues.append(issue_at(root, loc, message))
    return issues


_AUTH_MODES = ("keys", "none")


def _strip_union_tags(loc: Loc, root: yaml.Node) -> Loc:
    """Drop the discriminator values pydantic puts in error paths (experts.1.openai.x).

    The tag follows the position of the union, so it is dropped where the mapping at that
    position has a `kind` equal to it (even when a field has the same name, as `tool` does).
    """
    out: list[str | int] = []
    node: yaml.Node | None = root
    tagged: yaml.Node | None = None
    if loc[:1] == ("auth",) and loc[1:2] and loc[1] in _AUTH_MODES:
        loc = loc[:1] + loc[2:]  # auth's own union (keys | none)
    for part in loc:
        kind = _child(node, "kind") if node is not None else None
        if node is not tagged and isinstance(kind, yaml.ScalarNode) and kind.value == part:
            tagged = node
            continue
        out.append(part)
        node = _child(node, part) if node is not None else None
    return tuple(out)


def _child(node: yaml.Node, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                found: yaml.Node = value
                return found
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
        items: list[yaml.Node] = node.value
        return items[part] if 0 <= part < len(items) else None
    return None


def _line(root: yaml.Node, loc: Loc) -> int | None:
    """The line of the deepest node on `loc` that exists in the document."""
    node = root
    for part in loc:
        child = _child(node, part)
        if child is None:
            break
        node = child
    return node.start_mark.line + 1


def _dotted(loc: Loc) -> str:
    return ".".join(str(part) for part in loc)
