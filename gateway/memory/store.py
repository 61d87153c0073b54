"""`LocalStore`: the embedded exemplar store (numpy, in-process), with an optional snapshot.

With a snapshot path the store loads it at `start()` and writes it atomically (a temporary
file in the same folder, then a rename) at `aclose()` and, when something changed, every
`snapshot_interval_s` from a background task. The snapshot is one `.npz` file without
pickles: member `meta` is UTF-8 JSON (format, version, dim and, per tenant, its records in
row order) and member `v<i>` the i-th tenant's float32 vectors. A snapshot that cannot be
read is moved aside (`<name>.corrupt-<time>`) and the store starts empty.

Every index call runs in a worker thread, so large searches never block the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import anyio
import anyio.to_thread
import numpy as np
from numpy.typing import NDArray

from gateway.memory.index import MetaRow, VectorIndex
from gateway.memory.reads import IndexReads
from gateway.memory.records import SOURCES, Exemplar, StoreStatus

logger = logging.getLogger(__name__)

SNAPSHOT_FORMAT = "taskgate-exemplars"
SNAPSHOT_VERSION = 1
_READ_CHUNK = 1 << 24


class LocalStore(IndexReads):
    """An `ExemplarStore` in this process. `dim` None: set by the first record.

    `snapshot_interval_s` also paces the sweep that drops expired records.
    """

    def __init__(
        self,
        dim: int | None = None,
        snapshot: Path | None = None,
        clock: Callable[[], float] = time.time,
        *,
        snapshot_interval_s: float = 30.0,
    ) -> None:
        self._index = VectorIndex(dim, clock)
        self._snapshot = snapshot
        self._interval = snapshot_interval_s
        self._dirty = False
        self._save_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is not None:
            return
        if self._snapshot is not None:
            await anyio.to_thread.run_sync(_load_or_set_aside, self._snapshot, self._index)
        self._task = asyncio.create_task(self._maintain(), name="local-store-maintenance")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._save_if_dirty()

    async def add(self, exemplars: Sequence[Exemplar]) -> None:
        if exemplars:
            await anyio.to_thread.run_sync(self._index.upsert, list(exemplars))
            self._dirty = True

    async def remove(self, ids: Sequence[str]) -> int:
        found = await anyio.to_thread.run_sync(self._index.remove, list(ids))
        self._dirty = self._dirty or bool(found)
        return sum(found.values())

    def status(self) -> StoreStatus:
        extra = {"backend": "local"}
        if self._snapshot is not None:
            extra["snapshot"] = self._snapshot.name
        return StoreStatus(ok=True, records=len(self._index), extra=extra)

    async def _maintain(self) -> None:
        while True:
            await anyio.sleep(self._interval)
            await self._save_if_dirty()

    async def _save_if_dirty(self) -> None:
        """Drop expired records; write the snapshot if anything changed since the last."""
        purged = await anyio.to_thread.run_sync(self._index.purge_expired)
        self._dirty = self._dirty or purged > 0
        if self._snapshot is None:
            return
        async with self._save_lock:
            if not self._dirty:
                return
            self._dirty = False  # writes from now on make it dirty again
            try:
                await anyio.to_thread.run_sync(write_snapshot, self._index, self._snapshot)
            except (OSError, ValueError):
                self._dirty = True
                logger.exception("exemplar snapshot not written", extra={"action": "snapshot"})


def write_snapshot(index: VectorIndex, path: Path) -> None:
    """Write `index` to `path` atomically (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with index.exported() as segments:
        meta = {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "dim": index.dim,
            "segments": [
                {"tenant": tenant, "records": [list(row) for row in rows]}
                for tenant, _, rows in segments
            ],
        }
        blob = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        members: list[tuple[str, NDArray[np.generic]]] = [("meta", blob)]
        members += [(f"v{number}", vectors) for number, (_, vectors, _) in enumerate(segments)]
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - renamed into place below
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
        )
        try:
            with handle:
                _write_members(handle, members)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(handle.name, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(handle.name)
            raise


def _write_members(handle: IO[bytes], members: Sequence[tuple[str, NDArray[np.generic]]]) -> None:
    """The layout of `np.savez`: one .npy member per array, written without pickles."""
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in members:
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def read_snapshot(path: Path, index: VectorIndex) -> int:
    """Load a snapshot into an empty `index`; returns the number of records."""
    loaded = 0
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(_read_array(archive, "meta", np.uint8).tobytes())
        if meta.get("format") != SNAPSHOT_FORMAT or meta.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"not a version {SNAPSHOT_VERSION} {SNAPSHOT_FORMAT} snapshot")
        for number, segment in enumerate(meta["segments"]):
            rows = [_meta_row(raw) for raw in segment["records"]]
            vectors = _read_array(archive, f"v{number}", np.float32)
            index.import_segment(
                str(segment["tenant"]), vectors.astype(np.float32, copy=False), rows
            )
            loaded += len(rows)
    return loaded


def _load_or_set_aside(path: Path, index: VectorIndex) -> None:
    if not path.exists():
        return
    try:
        loaded = read_snapshot(path, index)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        index.clear()
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        logger.error(
            "exemplar snapshot unreadable, moved aside; starting empty",
            extra={"action": "snapshot", "error": repr(exc), "moved_to": aside.name},
        )
        with contextlib.suppress(OSError):
            path.replace(aside)
        return
    logger.info("exemplar snapshot loaded", extra={"action": "snapshot", "records": loaded})


def _read_array(
    archive: zipfile.ZipFile, name: str, dtype: type[np.generic]
) -> NDArray[np.generic]:
    """One .npy member read straight into an array this process owns (no pickles)."""
    with archive.open(f"{name}.npy") as member:
        shape, fortran, stored = _npy_header(member)
        if fortran or stored != np.dtype(dtype).newbyteorder("<"):
            raise ValueError(f"snapshot member {name} is {stored}, expected {np.dtype(dtype)}")
        array = np.empty(shape, dtype=dtype)
        view = array.reshape(-1).view(np.uint8).data
        filled = 0
        while filled < array.nbytes:
            chunk = member.read(min(_READ_CHUNK, array.nbytes - filled))
            if not chunk:
                raise ValueError(f"snapshot member {name} is truncated")
            view[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
    return array


def _npy_header(member: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype[np.generic]]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(member)
    raise ValueError(f"unsupported .npy version {version}")


def _meta_row(raw: object) -> MetaRow:
    if not isinstance(raw, list) or len(raw) != 8:
        raise ValueError(f"bad snapshot record: {raw!r:.80}")
    exemplar_id, expert, text, response, source, created, good, expires = raw
    if source not in SOURCES:
        raise ValueError(f"bad snapshot record source: {source!r}")
    return (
        str(exemplar_id),
        str(expert),
        str(text),
        None if response is None else str(response),
        source,
        float(created),
        bool(good),
        None if expires is None else float(expires),
    )
