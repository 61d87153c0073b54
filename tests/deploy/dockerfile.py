"""A small Dockerfile and .dockerignore reader, enough for static checks (no Docker engine).

It joins continuation lines, drops comments, splits stages at FROM, substitutes the global
ARG defaults in FROM, and reads the exec (JSON) and shell forms of commands.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str  # upper case: RUN, COPY, ...
    args: str  # the rest of the logical line, continuations joined
    line: int  # 1-based line of the keyword

    def words(self) -> list[str]:
        """The arguments as shell words (flags included)."""
        return shlex.split(self.args)

    def flags(self) -> dict[str, str]:
        """Leading `--name=value` flags (COPY --from=..., HEALTHCHECK --interval=...)."""
        out: dict[str, str] = {}
        for word in self.words():
            if not word.startswith("--"):
                break
            name, _, value = word[2:].partition("=")
            out[name] = value
        return out

    def operands(self) -> list[str]:
        """The arguments after the leading flags."""
        words = self.words()
        while words and words[0].startswith("--"):
            words.pop(0)
        return words


@dataclass(slots=True)
class Stage:
    base: str  # FROM's image or stage, global ARGs substituted
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        """ENV of this stage alone (KEY=value pairs and the legacy `ENV KEY value`)."""
        out: dict[str, str] = {}
        for instruction in self.all("ENV"):
            words = instruction.words()
            if words and "=" not in words[0]:
                out[words[0]] = " ".join(words[1:])
                continue
            for word in words:
                key, _, value = word.partition("=")
                out[key] = value
        return out


@dataclass(frozen=True, slots=True)
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(stage for stage in self.stages if stage.name == name)

    def stage_env(self, stage: Stage) -> dict[str, str]:
        """ENV as the stage sees it: inherited from the stages it is built FROM."""
        names = {s.name for s in self.stages}
        inherited = self.stage_env(self.stage(stage.base)) if stage.base in names else {}
        return {**inherited, **stage.env()}


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each instruction: comments dropped, `\\` lines joined."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments may sit between continuation lines too
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        out.append((start, " ".join(part for part in pending if part)))
        pending = []
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def parse(text: str) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, content in logical_lines(text):
        keyword, _, args = content.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), line)
        if instruction.keyword == "FROM":
            words = [_substitute(word, global_args) for word in instruction.operands()]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name, line=line))
        elif not stages:
            assert instruction.keyword == "ARG", f"line {line}: only ARG may precede FROM"
            key, _, value = instruction.args.partition("=")
            global_args[key.strip()] = value.strip()
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(global_args, stages)


def load(path: Path) -> Dockerfile:
    return parse(path.read_text(encoding="utf-8"))


def _substitute(word: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), word)


def exec_form(args: str) -> list[str] | None:
    """The JSON array of an exec-form command, or None for the shell form."""
    if not args.lstrip().startswith("["):
        return None
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def healthcheck_command(instruction: Instruction) -> list[str]:
    """HEALTHCHECK [--options] CMD <command>: the command as words."""
    head, sep, command = instruction.args.partition("CMD ")
    assert sep and all(w.startswith("--") for w in shlex.split(head)), instruction.args
    return exec_form(command) or ["/bin/sh", "-c", command.strip()]


# ---------------------------------------------------------------------------------------
# .dockerignore


def ignore_patterns(text: str) -> list[str]:
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip("/")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def is_ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` (relative to the context) out of the build context.

    A path is out when it, or a directory above it, matches; the last matching pattern
    wins and `!pattern` brings a path back.
    """
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.removeprefix("!"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored
