from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.access.gate import KeyRing
from gateway.access.keys import hash_token, key_id, new_key, verify
from gateway.access.keystore import KeyFileError, read_key_file, write_key_file
from gateway.config import AuthConfig
from tests.support.clock import Clock

pytestmark = pytest.mark.anyio


def test_a_new_key_verifies_against_its_hash_and_nothing_else() -> None:
    made = new_key("acme", admin=True, rpm=5)
    assert key_id(made.token) == made.record.id
    assert made.token not in made.record.hash
    assert verify(made.record, made.token)
    other = new_key("acme")
    assert not verify(made.record, other.token)
    assert not verify(made.record, made.token[:-1] + ("0" if made.token[-1] != "0" else "1"))
    assert (made.record.tenant, made.record.admin, made.record.rpm) == ("acme", True, 5)


def test_the_same_key_hashes_differently_with_another_salt() -> None:
    token = new_key("acme").token
    assert hash_token(token) != hash_token(token)


@pytest.mark.parametrize("token", ["", "tg_", "sk-abc", "tg_XYZ_abc", "tg_0123456789ab_short"])
def test_malformed_keys_have_no_id(token: str) -> None:
    assert key_id(token) is None


def test_invalid_tenant_names_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid tenant"):
        new_key("a b")


def test_key_file_round_trip_is_private(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    assert read_key_file(path) == []
    records = [new_key("acme").record, new_key("globex", tpm=100).record]
    write_key_file(path, records)
    assert read_key_file(path) == records
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "text", ["keys: 3\n", "[unclosed\n", "keys: [{id: zz, tenant: a, hash: x}]\n"]
)
def test_a_damaged_key_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(KeyFileError, match=r"keys\.yaml"):
        read_key_file(path)


async def test_keyring_sees_file_changes_after_recheck(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    first, second = new_key("acme"), new_key("globex")
    write_key_file(path, [first.record])
    auth = AuthConfig(keys_file=str(path), recheck_s=5)
    clock = Clock(100.0)
    ring = KeyRing(None, clock)
    assert await ring.find(auth, first.token) == first.record
    write_key_file(path, [second.record])  # first revoked, second added
    assert await ring.find(auth, first.token) == first.record  # still trusted for 5 s
    clock.now += 5
    assert await ring.find(auth, first.token) is None
    assert await ring.find(auth, second.token) == second.record


async def test_keyring_keeps_the_last_good_keys_when_the_file_breaks(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    made = new_key("acme")
    write_key_file(path, [made.record])
    auth = AuthConfig(keys_file=str(path), recheck_s=0)
    ring = KeyRing(None)
    assert await ring.find(auth, made.token) == made.record
    path.write_text("keys: [oops\n")
    assert await ring.find(auth, made.token) == made.record


async def test_keys_in_the_config_need_no_file() -> None:
    made = new_key("acme")
    entry = made.record.to_json()
    auth = AuthConfig.model_validate({"keys": [entry]})
    ring = KeyRing(None)
    assert await ring.find(auth, made.token) == made.record
    assert await ring.find(auth, new_key("acme").token) is None
