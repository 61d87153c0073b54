"""Soak: one gateway under steady mixed load for minutes, watched for errors, drift and growth.

    .venv/bin/python benchmarks/soak.py [--duration 600] [--concurrency 64] [--interval 10]

Everything runs on loopback: a redis-server (the gateway's memory backend is `redis`),
`benchmarks/stub_upstream.py` (an instant OpenAI-compatible upstream) and `taskgate serve`
in front of it. `--concurrency` client coroutines (aiohttp, closed loop: each sends its
next request when the last one is answered) send a mix of requests:

* routed (`model: auto`) and explicit (`model: stub`), streamed and not, each text new
  and sampled at temperature 0.7, so neither the response cache nor the embedding cache
  answers them (a quarter of the routed texts are arithmetic: the calculator answers);
* cache hits: greedy requests cycling through a few fixed texts, answered from the
  response cache once each text has been answered.

A request counts as an error unless it gets a 200 with a complete answer (a stream ends
with `data: [DONE]` and carries no error event). Every `--interval` seconds a sample
records the requests finished in that interval, their errors, p50 and p99 latency (to the
end of the answer), the gateway's resident memory (VmRSS), its asyncio tasks (from
`/metrics`) and Redis's used memory. Prints a row per sample and a summary, and writes JSON
(benchmarks/results/soak.json). Targets: no errors; the gateway's RSS at the end within
10% of the first sample after `--warmup`. The exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import platform
import random
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from overhead import letters  # noqa: E402  (this folder is on sys.path)
from stub_upstream import GATEWAY_EXPERTS  # noqa: E402

from tests.support.gateway import GatewayProcess  # noqa: E402
from tests.support.procs import free_port, start_process  # noqa: E402
from tests.support.redis import RedisServer, plain_redis  # noqa: E402

RSS_GROWTH_TARGET = 0.10
REQUEST_TIMEOUT_S = 30.0
CACHED_TEXTS = 16
CONFIG = (
    """
auth: none
memory: {{backend: redis, url: "{redis_url}"}}
cache: {{enabled: true}}
"""
    + GATEWAY_EXPERTS
)
TASKS = re.compile(r"^taskgate_event_loop_tasks (\S+)$", re.MULTILINE)
CACHE_HITS = re.compile(r"^taskgate_cache_hits_total\{[^}]*\} (\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class Kind:
    """One kind of request in the mix, drawn with probability `weight` / total."""

    name: str
    model: str
    stream: bool
    cached: bool
    weight: int

    def body(self, n: int) -> dict[str, Any]:
        if self.cached:
            text = f"tell me a fun fact about the ocean, part {letters(n % CACHED_TEXTS)}"
        elif self.model == "auto" and n % 4 == 0:
            text = f"what is {n % 97}% of {n % 1009}"
        else:
            text = f"tell me a fun fact about the ocean {letters(n)}"
        body: dict[str, Any] = {
            "model": self.model,
            "stream": self.stream,
            "max_tokens": 32,
            "messages": [{"role": "user", "content": text}],
        }
        if not self.cached:
            body["temperature"] = 0.7  # not repeatable: neither cached nor looked up
        return body


MIX = (
    Kind("auto", "auto", stream=False, cached=False, weight=25),
    Kind("auto-stream", "auto", stream=True, cached=False, weight=10),
    Kind("stub", "stub", stream=False, cached=False, weight=20),
    Kind("stub-stream", "stub", stream=True, cached=False, weight=25),
    Kind("cached", "auto", stream=False, cached=True, weight=10),
    Kind("cached-stream", "stub", stream=True, cached=True, weight=10),
)


@dataclass
class Sample:
    t_s: float
    requests: int
    errors: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    rss_mb: float
    tasks: int | None
    redis_mb: float | None


@dataclass
class Tally:
    """What the clients saw: this interval's latencies, and totals for the whole run."""

    latencies: list[float] = field(default_factory=list)
    interval_errors: int = 0
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)

    def record(self, kind: str, seconds: float, error: str | None) -> None:
        self.requests += 1
        self.by_kind[kind] += 1
        self.latencies.append(seconds)
        if error is not None:
            self.interval_errors += 1
            self.errors[f"{kind}: {error}"] += 1

    def take(self) -> tuple[list[float], int]:
        taken = (self.latencies, self.interval_errors)
        self.latencies, self.interval_errors = [], 0
        return taken


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def verdict(kind: Kind, status: int, raw: bytes) -> str | None:
    """None for a complete answer, else what was wrong with it."""
    if status != 200:
        return f"status {status}"
    if kind.stream:
        if not raw.rstrip().endswith(b"data: [DONE]"):
            return "stream without [DONE]"
        if b'"error"' in raw:
            return "error event"
    elif b'"choices"' not in raw:
        return "no choices"
    return None


async def client(
    session: aiohttp.ClientSession,
    url: str,
    seed: int,
    numbers: itertools.count[int],
    tally: Tally,
    stop_at: float,
) -> None:
    rng = random.Random(seed)
    weights = [kind.weight for kind in MIX]
    while time.monotonic() < stop_at:
        kind = rng.choices(MIX, weights)[0]
        body = kind.body(next(numbers))
        started = time.perf_counter()
        error: str | None
        try:
            async with session.post(url, json=body) as response:
                error = verdict(kind, response.status, await response.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = type(exc).__name__
        tally.record(kind.name, time.perf_counter() - started, error)


async def metric(session: aiohttp.ClientSession, url: str, pattern: re.Pattern[str]) -> float:
    async with session.get(url) as response:
        text = await response.text()
    return sum(float(value) for value in pattern.findall(text))


async def sampler(
    gateway_url: str,
    pid: int,
    redis: Redis,
    tally: Tally,
    interval: float,
    started: float,
    stop_at: float,
    samples: list[Sample],
) -> None:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        at = started + interval
        while at <= stop_at + 1e-6:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            latencies, errors = tally.take()
            try:
                tasks: int | None = int(await metric(session, f"{gateway_url}/metrics", TASKS))
            except (aiohttp.ClientError, TimeoutError):
                tasks = None
            try:
                redis_mb: float | None = int((await redis.info("memory"))["used_memory"]) / 2**20
            except Exception:  # a sample without Redis's figure still counts
                redis_mb = None
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            sample = Sample(
                t_s=round(at - started, 1),
                requests=len(latencies),
                errors=errors,
                rps=round(len(latencies) / interval, 1),
                p50_ms=None if p50 is None else round(p50 * 1000, 2),
                p99_ms=None if p99 is None else round(p99 * 1000, 2),
                rss_mb=round(rss_mb(pid), 1),
                tasks=tasks,
                redis_mb=None if redis_mb is None else round(redis_mb, 1),
            )
            samples.append(sample)
            print(row(sample), flush=True)
            at += interval


HEAD = f"{'t (s)':>7} {'requests':>9} {'errors':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} " + (
    f"{'RSS MB':>8} {'tasks':>6} {'redis MB':>9}"
)


def row(s: Sample) -> str:
    def num(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    return (
        f"{s.t_s:7.0f} {s.requests:9d} {s.errors:7d} {s.rps:8.1f} {num(s.p50_ms):>8} "
        f"{num(s.p99_ms):>8} {s.rss_mb:8.1f} {num(s.tasks, 0):>6} {num(s.redis_mb):>9}"
    )


async def drive(
    args: argparse.Namespace, gateway: GatewayProcess, redis_url: str
) -> tuple[dict[str, Any], list[Sample]]:
    assert gateway.handle is not None
    url = f"{gateway.url}/v1/chat/completions"
    tally, samples = Tally(), list[Sample]()
    numbers = itertools.count()
    redis = Redis.from_url(redis_url, socket_timeout=5)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        hits_before = await metric(session, f"{gateway.url}/metrics", CACHE_HITS)
        print(HEAD, flush=True)
        started = time.monotonic()
        stop_at = started + args.duration
        clients = [
            client(session, url, args.seed + i, numbers, tally, stop_at)
            for i in range(args.concurrency)
        ]
        watch = sampler(
            gateway.url, gateway.handle.pid, redis, tally, args.interval, started, stop_at, samples
        )
        await asyncio.gather(watch, *clients)
        hits = await metric(session, f"{gateway.url}/metrics", CACHE_HITS) - hits_before
    await redis.aclose()
    return summarize(args, tally, samples, int(hits)), samples


def summarize(
    args: argparse.Namespace, tally: Tally, samples: list[Sample], cache_hits: int
) -> dict[str, Any]:
    after = [s for s in samples if s.t_s >= args.warmup] or samples[-1:]
    first, last = after[0], samples[-1]
    growth = (last.rss_mb - first.rss_mb) / first.rss_mb
    errors = sum(tally.errors.values())
    p99s = [s.p99_ms for s in after if s.p99_ms is not None]
    return {
        "requests": tally.requests,
        "requests_by_kind": dict(tally.by_kind),
        "errors": errors,
        "errors_by_kind": dict(tally.errors),
        "cache_hits": cache_hits,
        "rps_after_warmup": round(sum(s.requests for s in after) / (args.interval * len(after)), 1),
        "p99_ms_after_warmup": {
            "first": p99s[0] if p99s else None,
            "last": p99s[-1] if p99s else None,
            "min": min(p99s, default=None),
            "max": max(p99s, default=None),
        },
        "rss_mb": {"after_warmup": first.rss_mb, "at_t_s": first.t_s, "end": last.rss_mb},
        "rss_growth": round(growth, 4),
        "targets": {
            "no_errors": errors == 0,
            "rss_growth_within_10pct": growth <= RSS_GROWTH_TARGET,
        },
    }


def report(summary: dict[str, Any]) -> str:
    p99 = summary["p99_ms_after_warmup"]
    rss = summary["rss_mb"]
    lines = [
        f"requests {summary['requests']} ({summary['rps_after_warmup']} req/s after warm-up), "
        f"cache hits {summary['cache_hits']}",
        f"errors {summary['errors']} (target 0)"
        + (f": {summary['errors_by_kind']}" if summary["errors"] else ""),
        f"p99 after warm-up: first {p99['first']} ms, last {p99['last']} ms, "
        f"range {p99['min']}-{p99['max']} ms",
        f"gateway RSS {rss['after_warmup']} MB at {rss['at_t_s']:.0f} s -> {rss['end']} MB at "
        f"the end: {summary['rss_growth'] * 100:+.1f}% (target within "
        f"{RSS_GROWTH_TARGET * 100:.0f}%)",
    ]
    missed = [name for name, met in summary["targets"].items() if not met]
    lines.append("targets met" if not missed else f"targets missed: {', '.join(missed)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds per sample")
    parser.add_argument(
        "--warmup",
        type=float,
        help="seconds before the RSS baseline (default: a tenth, >= 1 sample)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "soak.json")
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = max(args.interval, args.duration / 10)
    if args.duration < args.warmup + args.interval:
        parser.error("--duration must leave at least one sample after --warmup")

    with (
        tempfile.TemporaryDirectory(prefix="taskgate-soak-") as tmp,
        RedisServer(plain_redis()) as redis,
    ):
        stub_port = free_port()
        stub = start_process(
            [
                sys.executable,
                str(REPO / "benchmarks" / "stub_upstream.py"),
                "--port",
                str(stub_port),
            ],
            ready_url=f"http://127.0.0.1:{stub_port}/v1/models",
            timeout=30,
            name="stub",
        )
        config = Path(tmp) / "taskgate.yaml"
        config.write_text(CONFIG.format(redis_url=redis.url, stub_port=stub_port))
        env = {"TASKGATE_LOG_LEVEL": "WARNING", "TASKGATE_HOME": str(Path(tmp) / "home")}
        gateway = GatewayProcess(config, env, name="taskgate-soak")
        try:
            gateway.start()
            print(
                f"soak: {args.duration:.0f} s at concurrency {args.concurrency}, a sample every "
                f"{args.interval:.0f} s, RSS baseline after {args.warmup:.0f} s",
                flush=True,
            )
            summary, samples = asyncio.run(drive(args, gateway, redis.url))
            gateway.check_alive()
        finally:
            gateway.stop()
            stub.stop()

    print()
    print(report(summary))
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "duration_s": args.duration,
        "concurrency": args.concurrency,
        "interval_s": args.interval,
        "warmup_s": args.warmup,
        "mix": [asdict(kind) for kind in MIX],
        "when": time.strftime("%Y-%m-%d %H:%M"),
    }
    payload = {"meta": meta, "summary": summary, "samples": [asdict(s) for s in samples]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0 if all(summary["targets"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
