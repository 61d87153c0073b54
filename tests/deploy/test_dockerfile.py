"""The Dockerfile and .dockerignore, checked statically: there is no Docker engine here."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.deploy.dockerfile import (
    Dockerfile,
    Stage,
    exec_form,
    healthcheck_command,
    ignore_patterns,
    is_ignored,
    load,
    parse,
)

ROOT = Path(__file__).resolve().parents[2]
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return load(ROOT / "Dockerfile")


@pytest.fixture(scope="module")
def ignored() -> list[str]:
    return ignore_patterns((ROOT / ".dockerignore").read_text(encoding="utf-8"))


def runs(stage: Stage) -> list[str]:
    return [instruction.args for instruction in stage.all("RUN")]


def test_the_parser_joins_continuations_and_reads_stages() -> None:
    parsed = parse(
        "# syntax=docker/dockerfile:1\n"
        "ARG BASE=python:3.11-slim\n"
        "FROM ${BASE} AS one\n"
        "ENV A=1 \\\n"
        "    # a comment inside the continuation\n"
        "    B=two\n"
        "RUN echo a \\\n && echo b\n"
        "FROM one\n"
        'CMD ["x", "y"]\n'
    )
    first, second = parsed.stages
    assert (first.base, first.name, second.base, second.name) == (
        "python:3.11-slim",
        "one",
        "one",
        None,
    )
    assert first.env() == {"A": "1", "B": "two"}
    assert runs(first) == ["echo a && echo b"]
    assert parsed.stage_env(second) == {"A": "1", "B": "two"}
    cmd = second.last("CMD")
    assert cmd is not None and exec_form(cmd.args) == ["x", "y"]


def test_it_is_multi_stage_and_stages_refer_back(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) >= 2
    seen: set[str] = set()
    for stage in dockerfile.stages:
        for copy in stage.all("COPY"):
            source = copy.flags().get("from")
            assert source is None or source in seen, f"line {copy.line}: unknown stage {source}"
        if ":" not in stage.base:  # FROM <earlier stage>
            assert stage.base in seen, f"line {stage.line}: unknown stage {stage.base}"
        if stage.name:
            seen.add(stage.name)


def test_the_runtime_copies_a_virtualenv_built_on_the_same_base_image(
    dockerfile: Dockerfile,
) -> None:
    # A virtualenv links to its interpreter: it only moves between identical bases.
    final = dockerfile.final
    venv_copies = [c for c in final.all("COPY") if c.operands()[0] == "/opt/venv"]
    assert venv_copies, "the runtime stage copies the virtualenv"
    origin = dockerfile.stage(venv_copies[0].flags()["from"])
    while origin.base in {s.name for s in dockerfile.stages}:
        origin = dockerfile.stage(origin.base)
    assert origin.base == final.base
    assert final.base.startswith("python:3.11")


def test_the_final_stage_runs_as_a_non_root_user(dockerfile: Dockerfile) -> None:
    user = dockerfile.final.last("USER")
    assert user is not None, "the final stage sets USER"
    name, _, group = user.args.partition(":")
    assert name not in {"root", "0"} and group not in {"root", "0"}


def runtime_user(stage: Stage) -> tuple[str, str]:
    """(uid, name) of the user a RUN creates with `useradd --uid N ... NAME`."""
    commands = (part.strip() for run in runs(stage) for part in run.split("&&"))
    for command in commands:
        words = shlex.split(command)
        if words and words[0] == "useradd":
            return words[words.index("--uid") + 1], words[-1]
    raise AssertionError("the final stage creates its user with useradd --uid")


def test_the_model_cache_belongs_to_the_runtime_user(dockerfile: Dockerfile) -> None:
    final = dockerfile.final
    uid, name = runtime_user(final)
    user = final.last("USER")
    assert user is not None and user.args.split(":")[0] in {uid, name}
    home = dockerfile.stage_env(final)["TASKGATE_HOME"]
    into_home = [c for c in final.all("COPY") if c.operands()[-1] == home]
    assert into_home, f"the prepared models are copied into {home}"
    assert into_home[0].flags().get("chown", "").split(":")[0] in {uid, name}
    # The directory itself too (the router's fitted heads are cached there at run time).
    assert any(f"-o {name} " in run and home in run for run in runs(final))


def test_the_models_are_prepared_at_build_time(dockerfile: Dockerfile) -> None:
    preparing = [
        (stage, run)
        for stage in dockerfile.stages
        for run in runs(stage)
        if "-m experts.weights prepare" in run
    ]
    assert len(preparing) == 1, "one RUN prepares the packaged models"
    stage, run = preparing[0]
    words = shlex.split(run)
    cache_dir = words[words.index("--cache-dir") + 1]
    env = dockerfile.stage_env(stage)
    assert cache_dir in {"${TASKGATE_HOME}", "$TASKGATE_HOME", env.get("TASKGATE_HOME")}
    assert env["TASKGATE_HOME"] == dockerfile.stage_env(dockerfile.final)["TASKGATE_HOME"]
    assert env.get("HF_HUB_OFFLINE") == "1"
    shipped = [c for c in dockerfile.final.all("COPY") if c.flags().get("from") == stage.name]
    assert [c.operands()[0] for c in shipped] == [env["TASKGATE_HOME"]]


def test_torch_is_the_pinned_cpu_build(dockerfile: Dockerfile) -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    pin = re.search(r'TORCH_SPEC="(torch==[^"]+)"', setup)
    assert pin is not None
    torch_runs = [run for stage in dockerfile.stages for run in runs(stage) if "torch" in run]
    assert len(torch_runs) == 1
    words = shlex.split(torch_runs[0])
    assert pin[1] in words, f"the same pin as scripts/setup.sh: {pin[1]}"
    assert words[words.index("--index-url") + 1] == TORCH_CPU_INDEX
    everything = " ".join(run for stage in dockerfile.stages for run in runs(stage))
    assert "torchvision" not in everything and "torchaudio" not in everything


def test_the_runtime_is_offline(dockerfile: Dockerfile) -> None:
    env = dockerfile.stage_env(dockerfile.final)
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_it_serves_taskgate_on_port_8000(dockerfile: Dockerfile) -> None:
    final = dockerfile.final
    expose = final.last("EXPOSE")
    assert expose is not None and "8000" in expose.args.split()
    entrypoint, cmd = final.last("ENTRYPOINT"), final.last("CMD")
    assert entrypoint is not None
    command = (exec_form(entrypoint.args) or []) + (exec_form(cmd.args) or [] if cmd else [])
    assert command[:2] == ["taskgate", "serve"], "exec form, so signals reach the gateway"
    options = dict(zip(command[2::2], command[3::2], strict=False))
    assert options["--host"] == "0.0.0.0"
    assert options["--port"] == "8000"


def test_the_healthcheck_asks_readyz(dockerfile: Dockerfile) -> None:
    healthcheck = dockerfile.final.last("HEALTHCHECK")
    assert healthcheck is not None
    command = healthcheck_command(healthcheck)
    text = " ".join(command)
    assert "http://127.0.0.1:8000/readyz" in text or "http://localhost:8000/readyz" in text
    if command[0] == "curl":
        assert "curl" in " ".join(runs(dockerfile.final)), "curl is installed"
    else:
        assert command[:2] == ["python", "-c"]
    options = healthcheck.flags()
    assert {"interval", "timeout", "start-period"} <= set(options)


def test_every_copied_path_exists_and_is_in_the_context(
    dockerfile: Dockerfile, ignored: list[str]
) -> None:
    sources = [
        source
        for stage in dockerfile.stages
        for copy in stage.all("COPY") + stage.all("ADD")
        if "from" not in copy.flags()
        for source in copy.operands()[:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
        assert not is_ignored(source, ignored), f"COPY {source}: excluded by .dockerignore"


@pytest.mark.parametrize(
    "path",
    [
        ".git",
        ".git/HEAD",
        ".venv",
        ".venv/bin/python",
        "gateway/__pycache__/config.cpython-311.pyc",
        "experts/tools/__pycache__",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        "taskgate.egg-info",
        ".env",
    ],
)
def test_dockerignore_keeps_caches_and_secrets_out(path: str, ignored: list[str]) -> None:
    assert is_ignored(path, ignored)


def test_the_ignore_matcher_follows_docker_rules() -> None:
    patterns = ["**/__pycache__", "*.md", "!README.md", "build"]
    assert is_ignored("a/b/__pycache__/x.pyc", patterns)
    assert is_ignored("NOTES.md", patterns)
    assert not is_ignored("README.md", patterns)
    assert not is_ignored("docs/NOTES.md", patterns)  # `*` stays in one directory
    assert is_ignored("build/lib/x.py", patterns)
    assert not is_ignored("gateway/build.py", patterns)
