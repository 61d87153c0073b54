"""API keys: their format, their salted hash, and the record a key stands for.

A key reads `tg_<id>_<secret>`: the id (12 hex digits) names the key in listings, logs
and revocation, and finds its record without trying every hash; the secret is 192
random bits. Because the secret is random and long, one salted SHA-256 is as strong as a
slow password hash here, and costs a microsecond per request instead of milliseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

PREFIX = "tg"
ID_PATTERN = r"^[0-9a-f]{12}$"
HASH_PATTERN = r"^sha256:[0-9a-f]{32}:[0-9a-f]{64}$"
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
_TOKEN = re.compile(r"^tg_([0-9a-f]{12})_([0-9a-f]{48})$")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the gateway knows of a key: never the key itself."""

    id: str
    tenant: str
    hash: str
    admin: bool = False
    # Per-key limits; None: the `auth.limits` default.
    rpm: int | None = None
    tpm: int | None = None
    created: float = 0.0

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"id": self.id, "tenant": self.tenant, "hash": self.hash}
        if self.admin:
            data["admin"] = True
        if self.rpm is not None:
            data["rpm"] = self.rpm
        if self.tpm is not None:
            data["tpm"] = self.tpm
        if self.created:
            data["created"] = round(self.created, 3)
        return data


@dataclass(frozen=True, slots=True)
class NewKey:
    token: str  # shown once
    record: KeyRecord


def new_key(
    tenant: str, *, admin: bool = False, rpm: int | None = None, tpm: int | None = None
) -> NewKey:
    if not re.match(TENANT_PATTERN, tenant):
        raise ValueError(f"invalid tenant name {tenant!r}: letters, digits and _.:- only")
    key_id, secret = secrets.token_hex(6), secrets.token_hex(24)
    token = f"{PREFIX}_{key_id}_{secret}"
    record = KeyRecord(key_id, tenant, hash_token(token), admin, rpm, tpm, round(time.time(), 3))
    return NewKey(token, record)


def hash_token(token: str, salt: str | None = None) -> str:
    salt = salt if salt is not None else secrets.token_hex(16)
    digest = hashlib.sha256(bytes.fromhex(salt) + token.encode()).hexdigest()
    return f"sha256:{salt}:{digest}"


def key_id(token: str) -> str | None:
    """The id of a well-formed key; None for anything else."""
    match = _TOKEN.match(token)
    return match.group(1) if match else None


def verify(record: KeyRecord, token: str) -> bool:
    scheme, _, rest = record.hash.partition(":")
    salt, _, _ = rest.partition(":")
    if scheme != "sha256" or len(salt) != 32:
        return False
    return hmac.compare_digest(hash_token(token, salt), record.hash)
