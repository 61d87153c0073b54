"""`taskgate keys`: a key is printed once, only its hash is stored, revoking removes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.access.keys import key_id, verify
from gateway.access.keystore import read_key_file
from gateway.cli import main
from tests.support.redis import RedisServer


def test_add_list_and_revoke_in_a_keys_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.yaml"
    assert main(["keys", "add", "--tenant", "acme", "--admin", "--file", str(keys)]) == 0
    token = capsys.readouterr().out.strip()
    (record,) = read_key_file(keys)
    assert (record.id, record.tenant, record.admin) == (key_id(token), "acme", True)
    assert verify(record, token) and token not in keys.read_text()
    assert main(["keys", "add", "--tenant", "globex", "--rpm", "9", "--file", str(keys)]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--file", str(keys)]) == 0
    listed = capsys.readouterr().out
    assert f"{record.id}  tenant=acme admin" in listed and "tenant=globex rpm=9" in listed
    assert main(["keys", "revoke", record.id, "--file", str(keys)]) == 0
    assert [r.tenant for r in read_key_file(keys)] == ["globex"]
    assert main(["keys", "revoke", record.id, "--file", str(keys)]) == 1


def test_the_config_names_the_keys_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys.yaml"
    config = tmp_path / "c.yaml"
    config.write_text(
        f"auth: {{keys_file: {keys}}}\n"
        "experts:\n  - {name: calc, kind: tool, tool: calculator, description: maths}\n"
    )
    assert main(["keys", "add", "--tenant", "acme", "--config", str(config)]) == 0
    assert [r.tenant for r in read_key_file(keys)] == ["acme"]


def test_keys_in_redis(
    redis_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKGATE_REDIS_URL", redis_server.url)
    assert main(["keys", "add", "--tenant", "acme", "--redis"]) == 0
    token = capsys.readouterr().out.strip()
    assert main(["keys", "list", "--redis"]) == 0
    assert f"{key_id(token)}  tenant=acme" in capsys.readouterr().out
    assert main(["keys", "revoke", str(key_id(token)), "--redis"]) == 0
    assert main(["keys", "list", "--redis"]) == 0
    assert capsys.readouterr().out == ""


def test_nowhere_to_store_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "add", "--tenant", "acme"]) == 2
    assert "--file" in capsys.readouterr().err
    assert main(["keys", "add", "--tenant", "a b", "--file", "keys.yaml"]) == 2
    assert "invalid tenant" in capsys.readouterr().err
