from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main


def test_check_config_accepts_a_valid_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(
        "auth: none\nexperts:\n  - {name: calc, kind: tool, tool: calculator, description: maths}\n"
    )
    assert main(["check-config", str(path)]) == 0
    assert "ok, 1 experts: calc (tool)" in capsys.readouterr().out


def test_check_config_names_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "auth: none\nexperts:\n"
        "  - name: code\n"
        "    kind: openai\n"
        "    base_url: vllm:8000\n"
        "    model: m\n"
        "    description: code\n"
    )
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:5: experts.0.base_url: String should match pattern" in err


def test_route_prints_the_decision_and_scores(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "convert 5 miles to km"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("dispatch -> units  (score 1.000")
    assert [line.split()[0] for line in out[1:]] == ["units", "calculator", "general"]


def test_route_json_is_the_route_object(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "--json", "what is the weather like"]) == 0
    route = json.loads(capsys.readouterr().out)
    assert route["action"] == "clarify"
    assert route["reason"] == "no_match"
    assert route["question"].startswith("I'm not sure which of my experts fits this.")
