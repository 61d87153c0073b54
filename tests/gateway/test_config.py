from __future__ import annotations

from pathlib import Path

import pytest

from experts.specs import LocalSpec, OpenAISpec, ToolSpec
from gateway.config import ConfigError, load_config, parse_config
from gateway.settings import Settings

GOOD = """\
router:
  threshold: 0.5
  on_no_match: fallback
  fallback: chat
experts:
  - name: code
    kind: openai
    base_url: http://vllm-code:8000/v1
    model: ${CODE_MODEL:-Qwen2.5-Coder-7B-Instruct}
    api_key: ${CODE_KEY}
    description: writing code
    examples: ["write a python function"]
    fallbacks: [chat]
  - name: math
    kind: tool
    tool: calculator
    description: arithmetic
  - name: chat
    kind: local
    model: builtin:SmolLM2-135M-Instruct
    description: chat
auth: none
"""


def with_auth(text: str) -> str:
    """`text` with `auth: none` added at its end (so line numbers stay)."""
    if "auth:" in text or "experts" not in text:
        return text
    return text.rstrip("\n") + "\nauth: none\n"


def issues_of(text: str, env: dict[str, str] | None = None) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(with_auth(text), "c.yaml", env or {})
    return [(i.path, i.line, i.message) for i in caught.value.issues]


def test_the_embedded_default_is_valid() -> None:
    config = load_config(None, {})
    assert [e.name for e in config.experts] == ["calculator", "units", "general"]
    assert [e.kind for e in config.experts] == ["tool", "tool", "local"]
    assert all(e.description and e.examples for e in config.experts)
    assert config.embedder.model == "builtin:all-MiniLM-L6-v2"


def test_a_full_config_parses_with_env_interpolation() -> None:
    config = parse_config(GOOD, "c.yaml", {"CODE_KEY": "sk-secret"})
    code, math, chat = config.experts
    assert isinstance(code, OpenAISpec) and isinstance(math, ToolSpec)
    assert isinstance(chat, LocalSpec)
    assert code.model == "Qwen2.5-Coder-7B-Instruct"
    assert code.api_key is not None and code.api_key.get_secret_value() == "sk-secret"
    assert "sk-secret" not in repr(code)
    assert config.router.fallback == "chat"


def test_missing_env_variable_names_the_field_and_line() -> None:
    assert issues_of(GOOD) == [
        ("experts.0.api_key", 10, "environment variable CODE_KEY is not set")
    ]


def test_unknown_field_names_its_path_and_line() -> None:
    text = GOOD.replace("    tool: calculator\n", "    tool: calculator\n    colour: blue\n")
    assert issues_of(text, {"CODE_KEY": "k"}) == [("experts.1.colour", 17, "unknown field")]


def test_missing_field_names_the_expert_entry() -> None:
    text = "experts:\n  - name: up\n    kind: openai\n    model: m\n    description: d\n"
    assert issues_of(text) == [("experts.0.base_url", 2, "Field required")]


def test_wrong_type_and_bad_value() -> None:
    text = (
        "router: {threshold: high}\n"
        "experts:\n  - {name: m, kind: tool, tool: abacus, description: d}\n"
    )
    found = issues_of(text)
    assert [(path, line) for path, line, _ in found] == [
        ("router.threshold", 1),
        ("experts.0.tool", 3),
    ]
    assert "calculator" in found[1][2]


def test_unknown_kind_lists_the_known_ones() -> None:
    ((path, line, message),) = issues_of("experts:\n  - {name: m, kind: quantum, description: d}\n")
    assert (path, line) == ("experts.0", 2)
    assert "unknown kind" in message and "'openai'" in message


def test_reserved_and_duplicate_names() -> None:
    (issue,) = issues_of("experts:\n  - {name: auto, kind: tool, tool: units, description: d}\n")
    assert issue[0] == "experts.0.name" and "reserved" in issue[2]
    dup = "experts:\n" + "  - {name: a, kind: tool, tool: units, description: d}\n" * 2
    assert "repeated: a" in issues_of(dup)[0][2]


def test_references_must_resolve() -> None:
    text = GOOD.replace("fallbacks: [chat]", "fallbacks: [nobody]")
    assert "unknown fallbacks: nobody" in issues_of(text, {"CODE_KEY": "k"})[0][2]
    text = GOOD.replace("  fallback: chat\n", "")
    assert "needs router.fallback" in issues_of(text, {"CODE_KEY": "k"})[0][2]
    text = GOOD.replace("  fallback: chat\n", "  fallback: ghost\n")
    assert "'ghost' is not an expert" in issues_of(text, {"CODE_KEY": "k"})[0][2]


def test_invalid_yaml_names_the_line() -> None:
    ((path, line, message),) = issues_of("experts:\n  - name: [unclosed\n")
    assert path == "" and line == 3 and message.startswith("invalid YAML")


def test_empty_or_scalar_documents() -> None:
    assert issues_of("")[0][2] == "the document must be a mapping"
    assert issues_of("just text")[0][2] == "the document must be a mapping"
    assert issues_of("experts: []")[0][0] == "experts"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", {})


def test_rendered_error_reads_file_line_field(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(GOOD)
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert str(caught.value) == (
        f"{path}:10: experts.0.api_key: environment variable CODE_KEY is not set"
    )


def test_settings_read_the_environment() -> None:
    settings = Settings.from_env({"TASKGATE_CONFIG": "/etc/x.yaml", "TASKGATE_HOME": "/srv/tg"})
    assert settings.config_path == Path("/etc/x.yaml")
    assert settings.home == Path("/srv/tg")
    assert settings.env["TASKGATE_HOME"] == "/srv/tg"
    assert Settings.from_env({}).config_path is None


def test_the_readme_configuration_example_is_valid() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = parse_config(example, "README.md", {"TASKGATE_KEY": "k"})
    assert [e.name for e in config.experts] == ["code", "calculator", "general"]
    assert config.router.target is not None and config.router.target.oos_recall == 0.9


def test_redis_memory_needs_a_url() -> None:
    text = "memory: {backend: redis}\n" + GOOD
    ((path, line, message),) = issues_of(text, {"CODE_KEY": "k"})
    assert (path, line) == ("memory", 1)
    assert "needs memory.url" in message
