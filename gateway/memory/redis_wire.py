"""How exemplars look in Redis, and the one place Redis failures are translated.

    {prefix}:{namespace}:rec:{id}   a hash per record: tenant, expert, text, embedding (raw
                                    little-endian float32), response?, source, created, good
                                    ("1" | "0"), expires_at? (the key also expires then)
    {prefix}:{namespace}:changes    a stream of changed ids ({"id": id}), trimmed with MAXLEN ~
    {prefix}:{namespace}:idx:{dim}  the search index over the record hashes, where the server
                                    has one (Redis 8, Redis Stack)

`guarded()` runs one Redis call under a deadline and turns every failure into `RedisDown`
(or `RedisReplyError`, its subclass for an error reply), so no Redis exception travels
past the store.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import anyio
import numpy as np
from redis.exceptions import RedisError, ResponseError

from gateway.memory.records import SOURCES, Exemplar, Source

T = TypeVar("T")
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


class RedisDown(Exception):
    """Redis did not answer in time, refused, or failed: the store degrades."""


class RedisReplyError(RedisDown):
    """Redis answered with an error reply (e.g. an unknown command)."""


async def guarded(what: str, timeout_s: float, call: Awaitable[T]) -> T:
    """Await one Redis call within `timeout_s`; any failure becomes `RedisDown`."""
    try:
        with anyio.fail_after(timeout_s):
            return await call
    except ResponseError as exc:
        raise RedisReplyError(f"{what}: {exc}") from exc
    except (RedisError, OSError) as exc:  # TimeoutError is an OSError
        raise RedisDown(f"{what}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str
    namespace: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:{self.namespace}"

    @property
    def record_prefix(self) -> str:
        return f"{self.base}:rec:"

    @property
    def stream(self) -> str:
        return f"{self.base}:changes"

    @property
    def scan_pattern(self) -> str:
        return _GLOB_SPECIAL.sub(r"\\\1", self.record_prefix) + "*"

    def record(self, exemplar_id: str) -> str:
        return f"{self.record_prefix}{exemplar_id}"

    def search_index(self, dim: int) -> str:
        return f"{self.base}:idx:{dim}"

    def id_of(self, key: bytes | str) -> str:
        text = key.decode("utf-8") if isinstance(key, bytes) else key
        if not text.startswith(self.record_prefix):
            raise ValueError(f"not a record key: {text!r}")
        return text[len(self.record_prefix) :]


def encode(exemplar: Exemplar) -> dict[str, bytes | str]:
    embedding = np.asarray(exemplar.embedding, dtype="<f4")
    fields: dict[str, bytes | str] = {
        "tenant": exemplar.tenant,
        "expert": exemplar.expert,
        "text": exemplar.text,
        "embedding": embedding.tobytes(),
        "source": exemplar.source,
        "created": repr(float(exemplar.created)),
        "good": "1" if exemplar.good else "0",
    }
    if exemplar.response is not None:
        fields["response"] = exemplar.response
    if exemplar.expires_at is not None:
        fields["expires_at"] = repr(float(exemplar.expires_at))
    return fields


def decode(exemplar_id: str, raw: Mapping[bytes | str, bytes | str]) -> Exemplar:
    """A record hash as an `Exemplar`; ValueError when it is malformed."""
    try:
        fields = {as_text(key): value for key, value in raw.items()}
        embedding = fields["embedding"]
        vector = np.frombuffer(
            embedding if isinstance(embedding, bytes) else embedding.encode("latin-1"),
            dtype="<f4",
        ).astype(np.float32)
        source = _source(as_text(fields["source"]))
        response = fields.get("response")
        expires = fields.get("expires_at")
        created = float(as_text(fields["created"]))
        expires_at = None if expires is None else float(as_text(expires))
    except (KeyError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed record {exemplar_id!r}: {exc!r}") from exc
    if vector.size == 0 or not math.isfinite(created):
        raise ValueError(f"malformed record {exemplar_id!r}: empty vector or bad time")
    return Exemplar(
        id=exemplar_id,
        tenant=as_text(fields["tenant"]),
        expert=as_text(fields["expert"]),
        text=as_text(fields["text"]),
        embedding=vector,
        response=None if response is None else as_text(response),
        source=source,
        created=created,
        good=as_text(fields.get("good", "1")) == "1",
        expires_at=expires_at,
    )


def _source(text: str) -> Source:
    for source in SOURCES:
        if source == text:
            return source
    raise ValueError(f"unknown source {text!r}")


def as_text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def stream_id(value: bytes | str) -> tuple[int, int]:
    """A stream entry id ("ms-seq") as a comparable pair."""
    millis, _, seq = as_text(value).partition("-")
    return int(millis), int(seq or 0)
