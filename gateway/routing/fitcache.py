"""On-disk caches for router fitting: fitted heads and exemplar embeddings.

Both are keyed by a hash of everything that determines the result (for a head: the
exemplar embeddings, labels, hyper-parameters and the code version; for embeddings: the
embedder's identity and the texts), so a changed input is simply a different key and a
stale entry is never read. Entries are `.npz` files without pickles, written atomically
(a temporary file, then a rename); an unreadable entry counts as a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

JSONScalar = str | int | float | bool | None
Meta = Mapping[str, object]


class Hasher:
    """A stable digest of arrays, strings and JSON-able values, fed in order."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def array(self, value: NDArray[np.generic]) -> Hasher:
        array = np.ascontiguousarray(value)
        self.text(f"{array.dtype.str}{array.shape}")
        self._digest.update(array.tobytes())
        return self

    def text(self, value: str) -> Hasher:
        data = value.encode("utf-8")
        self._digest.update(len(data).to_bytes(8, "little"))
        self._digest.update(data)
        return self

    def texts(self, values: Sequence[str]) -> Hasher:
        self.text(str(len(values)))
        for value in values:
            self.text(value)
        return self

    def value(self, value: object) -> Hasher:
        return self.text(json.dumps(value, sort_keys=True, default=str))

    def hexdigest(self) -> str:
        return self._digest.hexdigest()[:40]


class ArrayCache:
    """Named arrays plus a JSON mapping per key, in `directory/<key>.npz`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.npz"

    def load(self, key: str) -> tuple[dict[str, NDArray[np.generic]], dict[str, object]] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files if name != "meta"}
                meta = json.loads(bytes(data["meta"]).decode("utf-8"))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            logger.warning("unreadable cache entry ignored", extra={"error": str(exc)})
            return None
        if not isinstance(meta, dict):
            return None
        return arrays, meta

    def store(self, key: str, arrays: Mapping[str, NDArray[np.generic]], meta: Meta) -> None:
        """Write the entry; a failure to write is logged, never raised (it is only a cache)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            encoded = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            members: dict[str, NDArray[np.generic]] = {"meta": encoded, **arrays}
            with os.fdopen(fd, "wb") as handle:
                save: Callable[..., None] = np.savez
                save(handle, **members)
            os.replace(tmp, self.path(key))
        except OSError as exc:
            logger.warning("cache entry not written", extra={"error": str(exc)})


class EmbeddingCache:
    """Embeddings of a list of texts by one embedder, keyed by identity and texts."""

    def __init__(self, directory: Path) -> None:
        self._cache = ArrayCache(directory)

    @staticmethod
    def key(identity: str, texts: Sequence[str]) -> str:
        return Hasher().text("embeddings-1").text(identity).texts(texts).hexdigest()

    def load(self, identity: str, texts: Sequence[str]) -> NDArray[np.float32] | None:
        entry = self._cache.load(self.key(identity, texts))
        if entry is None or "vectors" not in entry[0]:
            return None
        vectors = entry[0]["vectors"]
        if vectors.shape[0] != len(texts):
            return None
        return np.asarray(vectors, dtype=np.float32)

    def store(self, identity: str, texts: Sequence[str], vectors: NDArray[np.float32]) -> None:
        meta = {"identity": identity, "count": len(texts)}
        self._cache.store(self.key(identity, texts), {"vectors": vectors}, meta)
