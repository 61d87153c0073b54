"""LocalStore snapshots: round trip, periodic writes, atomic replace, unreadable files."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from gateway.memory.store import LocalStore
from tests.memory.helpers import Clock, record, unit, wait_until

pytestmark = pytest.mark.anyio


async def test_snapshot_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "memory" / "exemplars.npz"
    store = LocalStore(snapshot=path)
    await store.start()
    records = [
        record(
            f"r{i}",
            unit(1, i),
            tenant=f"t{i % 3}",
            expert=f"e{i % 2}",
            text=f"text {i} ünïcode",
            response=None if i % 2 else f"answer {i}",
            source="feedback" if i % 2 else "api",
            created=1000.5 + i,
            good=i % 4 != 0,
            expires_at=time.time() + 3600 if i % 5 == 0 else None,
        )
        for i in range(30)
    ]
    await store.add(records)
    await store.remove(["r0"])
    await store.aclose()

    again = LocalStore(snapshot=path)
    await again.start()
    try:
        assert await again.count() == 29
        assert await again.get("r0") is None
        for original in records[1:]:
            found = await again.get(original.id)
            assert found is not None and found.same_as(original)
        hits = await again.search(unit(1, 3), 2, tenant="t0")
        assert [hit.exemplar.id for hit in hits] == ["r3", "r6"]
        await again.add([record("new", unit(0, 1), tenant="t9")])
    finally:
        await again.aclose()
    assert _names(path.parent) == ["exemplars.npz"]  # no temporary files left behind


async def test_the_snapshot_holds_no_pickles(tmp_path: Path) -> None:
    path = tmp_path / "exemplars.npz"
    store = LocalStore(snapshot=path)
    await store.start()
    await store.add([record("a", unit(1)), record("b", unit(0, 1), tenant="t2")])
    await store.aclose()

    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["meta", "v0", "v1"]
        assert all(archive[name].dtype != object for name in archive.files)


async def test_a_changed_store_is_saved_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "exemplars.npz"
    store = LocalStore(snapshot=path, snapshot_interval_s=0.05)
    await store.start()
    try:
        await store.add([record("a", unit(1))])

        async def saved() -> bool:
            return path.exists()

        await wait_until(saved, "the snapshot is written without closing the store")
    finally:
        await store.aclose()


async def test_expired_records_are_swept_and_not_saved(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "exemplars.npz"
    store = LocalStore(snapshot=path, clock=clock)
    await store.start()
    await store.add([record("old", unit(1), expires_at=clock.now + 10), record("keep", unit(0, 1))])
    clock.now += 20
    await store.aclose()

    again = LocalStore(snapshot=path, clock=clock)
    await again.start()
    try:
        assert again.status().records == 1
        assert [ex.id for ex in await again.list_records()] == ["keep"]
    finally:
        await again.aclose()


@pytest.mark.parametrize("content", [b"not a zip file", b""])
async def test_an_unreadable_snapshot_is_moved_aside(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "exemplars.npz"
    path.write_bytes(content)
    store = LocalStore(snapshot=path)
    await store.start()
    try:
        assert await store.count() == 0
        assert store.status().ok
    finally:
        await store.aclose()
    aside = _set_aside(tmp_path)
    assert len(aside) == 1 and aside[0].read_bytes() == content


async def test_a_snapshot_of_another_dimension_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "exemplars.npz"
    store = LocalStore(snapshot=path)
    await store.start()
    await store.add([record("a", unit(1))])
    await store.aclose()

    other = LocalStore(dim=4, snapshot=path)
    await other.start()
    try:
        assert await other.count() == 0
    finally:
        await other.aclose()
    aside = _set_aside(tmp_path)
    assert len(aside) == 1
    with zipfile.ZipFile(aside[0]) as archive:
        assert "meta.npy" in archive.namelist()


def _set_aside(folder: Path) -> list[Path]:
    return sorted(folder.glob("exemplars.npz.corrupt-*"))


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())
