"""Vector search inside Redis, where the server has a search module (Redis 8, Redis Stack).

One index per store and dimension over the record hashes: tenant and expert as
case-sensitive TAGs, good as a TAG, the embedding as a FLOAT32 COSINE VECTOR (HNSW or
FLAT). A search is `FT.SEARCH idx "(filters)=>[KNN k @embedding $vec AS knn_score]"`;
the score returned is the cosine similarity (1 - the cosine distance Redis reports).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from redis.asyncio import Redis

from gateway.memory.records import Vector
from gateway.memory.redis_wire import RedisKeys, RedisReplyError, guarded

logger = logging.getLogger(__name__)

Algorithm = Literal["HNSW", "FLAT"]
# A separator no tenant or expert name contains: the whole value is one tag.
_TAG_SEPARATOR = "\x1f"
_SCORE = "knn_score"


def tag(value: str) -> str:
    """`value` as a literal inside `@field:{...}`: every non-alphanumeric escaped."""
    return "".join(ch if ch.isalnum() else f"\\{ch}" for ch in value)


class RedisVectorSearch:
    """FT index management and KNN queries for one store's records."""

    def __init__(
        self, client: Redis, keys: RedisKeys, *, algorithm: Algorithm, timeout_s: float
    ) -> None:
        self._client = client
        self._keys = keys
        self._algorithm = algorithm
        self._timeout = timeout_s
        # None: not probed yet.
        self.available: bool | None = None
        self.ready_dim: int | None = None
        # An index created over existing records indexes them in the background.
        self._building = False
        self._next_check = 0.0

    async def detect(self) -> bool:
        """Whether the server has the search module (`FT._LIST` answers)."""
        try:
            await guarded("FT._LIST", self._timeout, self._command("FT._LIST"))
        except RedisReplyError:
            self.available = False
        else:
            self.available = True
        return self.available

    async def ensure_index(self, dim: int) -> None:
        """Create the index for `dim` unless it exists (whoever created it)."""
        if self.ready_dim == dim:
            return
        sep = _TAG_SEPARATOR
        schema = [
            *("tenant", "TAG", "SEPARATOR", sep, "CASESENSITIVE"),
            *("expert", "TAG", "SEPARATOR", sep, "CASESENSITIVE"),
            *("good", "TAG"),
            *("embedding", "VECTOR", self._algorithm, "6", "TYPE", "FLOAT32"),
            *("DIM", str(dim), "DISTANCE_METRIC", "COSINE"),
        ]
        name = self._keys.search_index(dim)
        command = ("FT.CREATE", name, "ON", "HASH", "PREFIX", "1", self._keys.record_prefix)
        try:
            await guarded("FT.CREATE", self._timeout, self._command(*command, "SCHEMA", *schema))
        except RedisReplyError as exc:
            if "already exists" not in str(exc).lower():
                raise
        else:
            logger.info("redis search index created", extra={"index": name, "dim": dim})
        self.ready_dim = dim
        self._building = True
        self._next_check = 0.0

    async def _still_building(self, dim: int) -> bool:
        """Whether the index is still indexing existing records (FT.INFO, once a second)."""
        now = time.monotonic()
        if self._building and now >= self._next_check:
            name = self._keys.search_index(dim)
            reply = await guarded("FT.INFO", self._timeout, self._command("FT.INFO", name))
            self._building = _as_dict(reply).get(b"indexing", 0) not in (0, b"0", "0")
            self._next_check = now + 1.0
        return self._building

    async def knn(
        self,
        vector: Vector,
        k: int,
        *,
        expert: str | None,
        tenant: str | None,
        good_only: bool,
        policy: Literal["BATCHES", "ADHOC_BF"] | None = None,
    ) -> list[tuple[str, float]] | None:
        """(id, cosine similarity) of the k nearest records that pass the filters; None while
        the index is still indexing records that existed before it.

        `policy` overrides how RediSearch combines the filters with the vector index:
        BATCHES walks the HNSW graph and filters what it finds (fast when most records
        pass), ADHOC_BF compares the query with every record that passes (fast when few do).
        """
        query = np.asarray(vector, dtype="<f4")
        dim = int(query.shape[0])
        await self.ensure_index(dim)
        if await self._still_building(dim):
            return None
        filters = [f"@tenant:{{{tag(tenant)}}}"] if tenant is not None else []
        if expert is not None:
            filters.append(f"@expert:{{{tag(expert)}}}")
        if good_only:
            filters.append("@good:{1}")
        scope = f"({' '.join(filters)})" if filters else "*"
        hybrid = f" HYBRID_POLICY {policy}" if policy is not None and filters else ""
        reply = await guarded(
            "FT.SEARCH",
            self._timeout,
            self._command(
                "FT.SEARCH",
                self._keys.search_index(dim),
                f"{scope}=>[KNN {k} @embedding $vec{hybrid} AS {_SCORE}]",
                *("PARAMS", "2", "vec", query.tobytes()),
                *("SORTBY", _SCORE, "ASC", "LIMIT", "0", str(k)),
                *("RETURN", "1", _SCORE, "DIALECT", "2"),
            ),
        )
        try:
            found = _results(reply)
            return [(self._keys.id_of(key), 1.0 - distance) for key, distance in found]
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise RedisReplyError(f"unexpected FT.SEARCH reply: {reply!r:.200}") from exc

    async def _command(self, *args: str | bytes) -> object:
        result: object = await self._client.execute_command(*args)  # type: ignore[no-untyped-call]
        return result


def _as_dict(reply: object) -> Mapping[object, object]:
    if isinstance(reply, Mapping):
        return reply
    if isinstance(reply, list):
        return dict(zip(reply[::2], reply[1::2], strict=True))
    raise RedisReplyError(f"unexpected FT.INFO reply: {reply!r:.200}")


def _results(reply: object) -> list[tuple[bytes, float]]:
    """(key, distance) pairs from an FT.SEARCH reply, in either of redis-py's shapes.

    The client does not decode responses (`RedisStore` checks), so names are bytes.
    """
    score = _SCORE.encode()
    if isinstance(reply, Mapping):  # parsed: {"results": [{"id", "extra_attributes"}]}
        return [(row[b"id"], float(row[b"extra_attributes"][score])) for row in reply[b"results"]]
    if isinstance(reply, Sequence) and not isinstance(reply, bytes | str):
        # raw RESP2: [total, key, [field, value, ...], key, [...], ...]
        pairs = []
        for key, fields in zip(reply[1::2], reply[2::2], strict=True):
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            pairs.append((key, float(values[score])))
        return pairs
    raise TypeError(f"unexpected reply type {type(reply).__name__}")
