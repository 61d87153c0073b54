"""Where hashed keys live besides the config: a keys file, or Redis.

The keys file is YAML (`keys: [{id, tenant, hash, ...}]`) owned by `taskgate keys`: it
is rewritten whole, atomically, readable by its owner only. In Redis a key is one hash
at `<prefix>:apikey:<id>`, so every replica sees a new or revoked key at once.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import ValidationError
from redis.asyncio import Redis

from gateway.access.keys import KeyRecord
from gateway.config import KeyEntry
from gateway.errors import AuthUnavailable
from gateway.memory.redis_wire import RedisDown, guarded

T = TypeVar("T")


class KeyFileError(ValueError):
    pass


def record_of(entry: KeyEntry) -> KeyRecord:
    return KeyRecord(
        entry.id, entry.tenant, entry.hash, entry.admin, entry.rpm, entry.tpm, entry.created
    )


def read_key_file(path: Path) -> list[KeyRecord]:
    """The keys in `path`; a file that does not exist yet holds none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise KeyFileError(f"{path}: invalid YAML") from exc
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise KeyFileError(f"{path}: expected a mapping with a 'keys' list")
    try:
        return [record_of(KeyEntry.model_validate(entry)) for entry in entries]
    except ValidationError as exc:
        raise KeyFileError(f"{path}: invalid key entry: {exc.errors()[0]['msg']}") from exc


def write_key_file(path: Path, records: Sequence[KeyRecord]) -> None:
    """Replace `path` with these keys, atomically, mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump({"keys": [r.to_json() for r in records]}, sort_keys=False)
    header = "# API keys (salted hashes), managed by `taskgate keys`.\n"
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(header + text)
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class RedisKeys:
    """Hashed keys in Redis; every call is bounded by `timeout_s`."""

    def __init__(self, client: Redis, *, prefix: str, timeout_s: float) -> None:
        self._client = client
        self._prefix = f"{prefix}:apikey:"
        self._timeout_s = timeout_s

    async def add(self, record: KeyRecord) -> None:
        fields = {k: _text(v) for k, v in record.to_json().items()}
        items: list[str] = [part for pair in fields.items() for part in pair]
        await self._call(self._client.hset(self._prefix + record.id, items=items))

    async def get(self, key_id: str) -> KeyRecord | None:
        raw = await self._call(self._client.hgetall(self._prefix + key_id))
        return _parse(raw) if raw else None

    async def revoke(self, key_id: str) -> bool:
        removed = await self._call(self._client.delete(self._prefix + key_id))
        return bool(removed)

    async def list(self) -> list[KeyRecord]:
        async def scan() -> list[KeyRecord]:
            found = []
            async for name in self._client.scan_iter(match=self._prefix + "*", count=500):
                raw = await self._client.hgetall(name)
                record = _parse(raw) if raw else None
                if record is not None:
                    found.append(record)
            return sorted(found, key=lambda r: r.created)

        return await self._call(scan())

    async def _call(self, operation: Awaitable[T]) -> T:
        try:
            return await guarded("key store", self._timeout_s, operation)
        except RedisDown as exc:
            raise AuthUnavailable(f"the key store (Redis) did not answer: {exc}") from exc


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _parse(raw: Mapping[bytes | str, bytes | str]) -> KeyRecord | None:
    data = {_str(k): _str(v) for k, v in raw.items()}
    try:
        return record_of(KeyEntry.model_validate(data))
    except ValidationError:
        return None  # a damaged entry admits nobody
