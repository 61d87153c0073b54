"""Fixed API keys for tests: the same name always gives the same key and hash."""

from __future__ import annotations

import hashlib

from gateway.access.keys import hash_token


def token(name: str) -> str:
    """The key a test presents for `name` (e.g. a tenant)."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    return f"tg_{digest[:12]}_{digest[12:60]}"


def entry(name: str, *, tenant: str | None = None, admin: bool = False) -> str:
    """The config entry (a YAML flow mapping) of `token(name)`: its id, tenant and hash."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    hashed = hash_token(token(name), digest[:32])
    fields = f"id: '{digest[:12]}', tenant: {tenant or name}, hash: '{hashed}'"
    return "{" + fields + (", admin: true" if admin else "") + "}"


def auth_block(*entries: str) -> str:
    """An `auth:` section with these entries (see `entry`)."""
    return "auth:\n  keys:\n" + "".join(f"    - {e}\n" for e in entries)
