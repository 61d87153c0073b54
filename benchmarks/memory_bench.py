"""Exemplar search latency and memory, per store, at 10k / 100k / 1M exemplars (384-d).

    .venv/bin/python benchmarks/memory_bench.py [--sizes 10000 100000 1000000] [--queries 300]

Stores, each loaded with N random unit vectors of one tenant (the large per-tenant case):

* local         LocalStore, the in-process numpy index (the embedded default);
* redis         RedisStore on Debian's Redis 7: records in Redis, searches on the replica's
                in-process index, kept in step through the change stream;
* redis-search  RedisStore on Redis Stack 7.4 with vector_search="redis": every search is
                an FT.SEARCH KNN query (HNSW) in Redis.

Latency is one `search(vector, k=10, tenant=...)` call as the gateway makes it, p50/p99
over random queries. Memory is what the store adds: this process's resident memory for
the in-process index, plus Redis's `used_memory` for what Redis holds. Prints a table and
writes JSON (benchmarks/results/memory_bench.json). Starts its own redis-server processes
on free loopback ports (`scripts/redis_env.sh` provides Redis Stack).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import psutil
from redis.asyncio import Redis
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.memory.records import Exemplar, ExemplarStore  # noqa: E402
from gateway.memory.redis_store import RedisStore  # noqa: E402
from gateway.memory.store import LocalStore  # noqa: E402
from tests.support.redis import RedisServer, plain_redis, stack_redis  # noqa: E402

DIM = 384
TENANT = "bench"
EXPERTS = [f"expert-{i}" for i in range(10)]
BATCH = 5_000
STORES = ("local", "redis", "redis-search")


def vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = rng.standard_normal((n, DIM), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def records(start: int, rows: np.ndarray) -> list[Exemplar]:
    return [
        Exemplar(
            id=f"ex-{start + i}",
            tenant=TENANT,
            expert=EXPERTS[(start + i) % len(EXPERTS)],
            text=f"example request number {start + i}",
            embedding=row,
            source="api",
            created=float(start + i),
        )
        for i, row in enumerate(rows)
    ]


def rss() -> int:
    gc.collect()
    return int(psutil.Process(os.getpid()).memory_info().rss)


async def redis_used(client: Redis | None) -> int:
    if client is None:
        return 0
    info = await client.info("memory")
    return int(info["used_memory"])


@asynccontextmanager
async def open_store(kind: str) -> AsyncIterator[tuple[ExemplarStore, Redis | None]]:
    if kind == "local":
        store = LocalStore(dim=DIM)
        await store.start()
        try:
            yield store, None
        finally:
            await store.aclose()
        return
    binary = plain_redis() if kind == "redis" else stack_redis()
    with RedisServer(binary) as server:
        client = Redis.from_url(
            server.url, socket_timeout=120, socket_connect_timeout=5, protocol=2
        )
        mode = "local" if kind == "redis" else "redis"
        store = RedisStore(client, namespace="bench", dim=DIM, vector_search=mode, timeout_s=120)
        await store.start()
        try:
            yield store, client
        finally:
            await store.aclose()
            await client.aclose()


async def measure(kind: str, size: int, queries: int, k: int, seed: int) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    process_before = rss()
    async with open_store(kind) as (store, client):
        redis_before = await redis_used(client)
        started = time.perf_counter()
        for start in range(0, size, BATCH):
            await store.add(records(start, vectors(rng, min(BATCH, size - start))))
        load_s = time.perf_counter() - started
        await wait_until_searchable(store, size)
        probes = vectors(rng, queries)
        if kind == "redis-search":
            assert client is not None
            await wait_until_redis_searches(store, client, probes[0], k)
        process_bytes = rss() - process_before
        redis_bytes = await redis_used(client) - redis_before
        for probe in probes[:10]:  # warm up
            await store.search(probe, k, tenant=TENANT)
        ft_before = await ft_searches(client)
        latencies = []
        for probe in probes:
            t0 = time.perf_counter()
            hits = await store.search(probe, k, tenant=TENANT)
            latencies.append((time.perf_counter() - t0) * 1000)
            assert len(hits) == k
        in_redis = await ft_searches(client) - ft_before
    return {
        "store": kind,
        "exemplars": size,
        "p50_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(float(np.percentile(latencies, 99)), 3),
        "process_mb": round(process_bytes / 2**20, 1),
        "redis_mb": round(redis_bytes / 2**20, 1),
        "load_s": round(load_s, 1),
        # How many of the timed searches were FT.SEARCH queries in Redis.
        "ft_search_share": round(in_redis / len(probes), 3),
    }


async def ft_searches(client: Redis | None) -> int:
    if client is None:
        return 0
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_FT.SEARCH", {}).get("calls", 0))


async def wait_until_redis_searches(
    store: ExemplarStore, client: Redis, probe: np.ndarray, k: int, timeout_s: float = 1800
) -> None:
    """An index created before the records indexes them as they come; one created over
    existing records indexes them in the background, and the store searches locally until
    it is done. Wait until a search is answered by FT.SEARCH."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = await ft_searches(client)
        await store.search(probe, k, tenant=TENANT)
        if await ft_searches(client) > before:
            return
        await asyncio.sleep(1.0)
    raise RuntimeError("Redis never answered a search with FT.SEARCH")


async def wait_until_searchable(store: ExemplarStore, size: int, timeout_s: float = 900) -> None:
    """Redis Stack indexes in the background; wait until every record is counted."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await store.count(tenant=TENANT) >= size:
            return
        await asyncio.sleep(0.5)


def table(rows: list[dict[str, object]]) -> str:
    head = ["store", "exemplars", "p50_ms", "p99_ms", "process_mb", "redis_mb", "load_s"]
    head.append("ft_search_share")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    lines += [
        " | ".join(f"{row[h]:,}" if h == "exemplars" else str(row[h]) for h in head) for row in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--stores", nargs="+", choices=STORES, default=list(STORES))
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "memory_bench.json"
    )
    args = parser.parse_args(argv)
    threadpool_limits(limits=1, user_api="blas")  # as the server runs
    rows: list[dict[str, object]] = []
    for size in args.sizes:
        for kind in args.stores:
            row = asyncio.run(measure(kind, size, args.queries, args.k, args.seed))
            print(
                f"{kind:>12} {size:>9,}: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms", flush=True
            )
            rows.append(row)
    print()
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "dim": DIM,
        "k": args.k,
        "queries": args.queries,
        "when": time.strftime("%Y-%m-%d"),
    }
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
