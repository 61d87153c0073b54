"""The gate every request passes: its key (which tenant, admin or not) and its budget."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from gateway.access.keys import KeyRecord, key_id, verify
from gateway.access.keystore import KeyFileError, RedisKeys, read_key_file, record_of
from gateway.access.limits import Limiter, LimiterUnavailable, LocalLimiter, RedisLimiter
from gateway.config import AuthConfig, Config, NoAuth
from gateway.errors import Forbidden, RateLimited, Unauthorized

logger = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
_MAX_REMEMBERED = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a key's tenant and rights (`key` None when auth is off)."""

    tenant: str
    key: str | None
    admin: bool
    rpm: int | None
    tpm: int | None

    @property
    def budget_name(self) -> str:
        return self.key or f"tenant:{self.tenant}"


class KeyRing:
    """Finds a presented key's record: in the config, the keys file, then Redis.

    Records from the file and from Redis are trusted for `auth.recheck_s`, then read
    again, so a new key works and a revoked one stops within that time.
    """

    def __init__(self, redis: RedisKeys | None, clock: Callable[[], float] = time.monotonic):
        self._redis = redis
        self._clock = clock
        self._auth: AuthConfig | None = None
        self._static: dict[str, KeyRecord] = {}
        self._file: dict[str, KeyRecord] = {}
        self._file_stamp: tuple[int, int] | None = None
        self._file_checked = float("-inf")
        self._remembered: dict[str, tuple[float, KeyRecord | None]] = {}

    async def find(self, auth: AuthConfig, token: str) -> KeyRecord | None:
        if auth is not self._auth:
            self._configure(auth)
        ident = key_id(token)
        if ident is None:
            return None
        record = self._static.get(ident) or self._from_file(auth, ident)
        if record is None and auth.redis and self._redis is not None:
            record = await self._from_redis(auth, ident)
        return record if record is not None and verify(record, token) else None

    def _configure(self, auth: AuthConfig) -> None:
        self._auth = auth
        self._static = {entry.id: record_of(entry) for entry in auth.keys}
        self._file, self._file_stamp, self._file_checked = {}, None, float("-inf")
        self._remembered.clear()

    def _from_file(self, auth: AuthConfig, ident: str) -> KeyRecord | None:
        if auth.keys_file is None:
            return None
        now = self._clock()
        if now - self._file_checked >= auth.recheck_s:
            self._file_checked = now
            self._reread(Path(auth.keys_file).expanduser())
        return self._file.get(ident)

    def _reread(self, path: Path) -> None:
        try:
            stat = path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            self._file, self._file_stamp = {}, None
            return
        if stamp == self._file_stamp:
            return
        try:
            self._file = {record.id: record for record in read_key_file(path)}
        except KeyFileError as exc:  # keep the keys read last time
            logger.error("keys file not read; keeping the previous keys", extra={"error": str(exc)})
            return
        self._file_stamp = stamp

    async def _from_redis(self, auth: AuthConfig, ident: str) -> KeyRecord | None:
        assert self._redis is not None
        now = self._clock()
        seen = self._remembered.get(ident)
        if seen is not None and now - seen[0] < auth.recheck_s:
            return seen[1]
        record = await self._redis.get(ident)
        if len(self._remembered) >= _MAX_REMEMBERED:
            self._remembered.clear()
        self._remembered[ident] = (now, record)
        return record


class Access:
    """Authenticates requests and holds their rate limits (see `gateway.access`)."""

    def __init__(self, keyring: KeyRing, limiter: Limiter) -> None:
        self._keyring = keyring
        self._limiter = limiter

    async def authenticate(self, config: Config, authorization: str | None) -> Principal:
        auth = config.auth
        if isinstance(auth, NoAuth):
            limits = auth.limits
            return Principal(DEFAULT_TENANT, None, True, limits.rpm, limits.tpm)
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        record = await self._keyring.find(auth, token.strip())
        if record is None:
            raise Unauthorized("invalid or revoked API key")
        rpm = record.rpm if record.rpm is not None else auth.limits.rpm
        tpm = record.tpm if record.tpm is not None else auth.limits.tpm
        return Principal(record.tenant, record.id, record.admin, rpm, tpm)

    @staticmethod
    def require_admin(principal: Principal) -> None:
        if not principal.admin:
            raise Forbidden("this needs an API key with admin: true")

    async def admit(self, principal: Principal, *, tokens: bool) -> None:
        """Spend one request of the key's minute; with `tokens`, also need tokens left."""
        if principal.rpm is not None:
            await self._take(principal, "req", principal.rpm, 1, "requests")
        if tokens and principal.tpm is not None:
            await self._take(principal, "tok", principal.tpm, 0, "tokens")

    async def charge_tokens(self, principal: Principal, count: int) -> None:
        if principal.tpm is None or count <= 0:
            return
        try:
            await self._limiter.charge(f"{principal.budget_name}:tok", count)
        except LimiterUnavailable as exc:
            logger.warning("token use not counted: Redis unavailable", extra={"error": str(exc)})

    async def _take(
        self, principal: Principal, kind: str, limit: int, cost: int, what: str
    ) -> None:
        try:
            verdict = await self._limiter.take(f"{principal.budget_name}:{kind}", limit, cost)
        except LimiterUnavailable as exc:  # fail open: an outage must not stop traffic
            logger.warning("rate limit not checked: Redis unavailable", extra={"error": str(exc)})
            return
        if not verdict.allowed:
            raise RateLimited(
                f"rate limit reached: {limit} {what} per minute for this API key",
                retry_after_s=verdict.retry_after_s,
            )


def build_access(config: Config, redis: Redis | None) -> Access:
    """Redis (when the memory is in Redis) holds keys and counters for every replica."""
    if redis is None:
        return Access(KeyRing(None), LocalLimiter())
    prefix, timeout = config.memory.prefix, config.memory.timeout_s
    keys = RedisKeys(redis, prefix=prefix, timeout_s=timeout)
    return Access(KeyRing(keys), RedisLimiter(redis, prefix=prefix, timeout_s=timeout))
