"""Gateway overhead side by side: taskgate and the LiteLLM proxy in front of one instant stub.

    .venv/bin/python benchmarks/overhead.py [--duration 20] [--targets ...] [--no-litellm]

Everything runs on loopback, each point bounded in time:

* `benchmarks/stub_upstream.py`: an OpenAI-compatible upstream that answers at once (a
  completion, or 20 SSE chunks);
* `wrk` (Debian's; `apt-get install wrk`), one thread, closed loop, at concurrency 1, 16
  and 64, non-streaming and streaming; a small client measures the time to the first chunk;
* CPU pinning with `taskset`: the gateway on core 0, the stub and the load on core 1.

Targets, measured in the same run:

* `direct`: the stub itself (the baseline the "added" latency is measured against);
* `litellm`: the LiteLLM proxy (`benchmarks/litellm_env.sh` builds its venv), one worker,
  `LITELLM_LOG=ERROR`, no database;
* `taskgate-fixed`: taskgate with `model: stub` (a fixed route, no embedding);
* `taskgate-auto`: `model: auto`, every request embedded and routed (each request's text
  is different, so neither the embedding cache nor the response cache helps); the default
  embedder: int8 on ONNX Runtime;
* `taskgate-cache`: `model: auto` answered by a semantic cache hit (no upstream call);
* `taskgate-auto-float32`: `taskgate-auto` with `embedder.precision: float32` (on ONNX
  Runtime, the default before);
* `taskgate-auto-torch`: `taskgate-auto` with `embedder.runtime: torch` (float32 on eager
  torch, the default before that).

taskgate runs with caching off (`Cache-Control: no-cache, no-store`) except for
`taskgate-cache`, whose request texts differ from the cached one by a word of letters.

With `--baseline DIR` (a checkout of an earlier commit, e.g. `git worktree add DIR HEAD~1`),
`taskgate-fixed` is measured again on that code in the same run, with the same Python
environment, as `taskgate-fixed@baseline`: the ratios show what a change cost.

Prints a table and the ratios against LiteLLM (and the baseline), and writes JSON
(benchmarks/results/overhead.json).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from stub_upstream import GATEWAY_EXPERTS

REPO = Path(__file__).resolve().parents[1]
GATEWAY_CORE, LOAD_CORE = "0", "1"
CONCURRENCY = (1, 16, 64)
PROMPT = "tell me a fun fact about the ocean"
# taskgate's default embedder (auto: int8 on ONNX Runtime), and other embedders beside it:
# (precision, runtime) -> the targets measured on a taskgate process with that embedder.
EMBEDDERS = {
    ("auto", "auto"): ("taskgate-fixed", "taskgate-auto", "taskgate-cache"),
    ("float32", "auto"): ("taskgate-auto-float32",),
    ("float32", "torch"): ("taskgate-auto-torch",),
}
TARGETS = ("direct", "litellm", *itertools.chain(*EMBEDDERS.values()))
CACHE_SEED_PROMPT = "tell me a fun fact about the ocean please"
TTFC_REQUESTS = 105

TASKGATE_CONFIG = (
    """
server: {{host: 127.0.0.1, port: {port}}}
embedder: {{precision: {precision}, runtime: {runtime}}}
memory: {{backend: local}}
cache: {{enabled: true, threshold: 0.8}}
auth: none
# The benchmark's texts (a prompt and a nonsense word) score about 0.4 against the stub's
# examples: low enough to be clarified at the default threshold, so it is set below.
router: {{threshold: 0.3, margin: 0.04}}
"""
    + GATEWAY_EXPERTS
)

LITELLM_CONFIG = """
model_list:
  - model_name: stub
    litellm_params:
      model: openai/stub
      api_base: http://127.0.0.1:{stub_port}/v1
      api_key: unused
general_settings: {{master_key: {key}}}
litellm_settings: {{drop_params: true}}
"""

# LiteLLM refuses to start without a master key; every target gets it (taskgate runs
# without auth here and ignores it).
API_KEY = "sk-taskgate-benchmark-0123456789"
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
{extra_headers}
local n = {start}
-- n in letters: request texts differ without differing numbers (the cache compares them)
local function word(k)
  local s = ""
  repeat
    s = string.char(97 + k % 26) .. s
    k = math.floor(k / 26)
  until k == 0
  return s
end
request = function()
  n = n + 1
  local text = {text}
  local body = '{{"model":"{model}","stream":{stream},"max_tokens":32,' ..
    '"messages":[{{"role":"user","content":"' .. text .. '"}}]}}'
  return wrk.format(nil, "/v1/chat/completions", nil, body)
end
"""


@dataclass
class Point:
    target: str
    stream: bool
    concurrency: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms_per_request: float | None


@dataclass
class TargetResult:
    target: str
    points: list[Point] = field(default_factory=list)
    ttfc_p50_ms: float | None = None
    # taskgate-cache: the share of its requests the response cache answered.
    cache_hit_share: float | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout_s: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready within {timeout_s:.0f}s")


@contextlib.contextmanager
def started(
    command: list[str], ready_url: str, core: str, env: dict[str, str], timeout_s: float, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        process = subprocess.Popen(
            ["taskset", "-c", core, *command],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        wait_http(ready_url, timeout_s, process)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU of a process and its children so far (Linux /proc)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def run_wrk(url: str, script: Path, concurrency: int, duration: int) -> dict[str, float]:
    command = [
        "taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{concurrency}", f"-d{duration}s",
        "--latency", "--timeout", "10s", "-s", str(script), url,
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)\s*$", out, re.MULTILINE))
    if set(percentiles) != {"50", "99"}:
        raise RuntimeError(f"wrk at c={concurrency} against {url} gave no latencies:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(percentiles["50"]),
        "p99_ms": _ms(percentiles["99"]),
        "errors": errors,
    }


def first_chunk_ms(port: int, bodies: list[bytes], headers: str) -> float:
    """Median time from sending a streaming request to its first SSE event (one connection,
    the bodies one after another; the first five are not counted)."""
    times = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for body in bodies:
            request = (
                f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                f"content-type: application/json\r\nauthorization: Bearer {API_KEY}\r\n"
                f"{headers}content-length: {len(body)}\r\n\r\n"
            ).encode() + body
            started_at = time.perf_counter()
            sock.sendall(request)
            seen, first = b"", None
            while True:
                data = sock.recv(65536)
                if not data:
                    raise RuntimeError("connection closed mid-stream")
                seen += data
                if first is None and b"data:" in seen:
                    first = time.perf_counter() - started_at
                if seen.endswith(b"0\r\n\r\n") and b"[DONE]" in seen:
                    break
            times.append(first * 1000 if first is not None else float("nan"))
    return statistics.median(times[5:] or times)


def letters(k: int) -> str:
    """k as a word of letters (the wrk scripts' `word`)."""
    out = ""
    while True:
        out = chr(97 + k % 26) + out
        k //= 26
        if k == 0:
            return out


_runs = itertools.count(1)


def script_for(
    directory: Path, model: str, stream: bool, vary: bool, no_cache: bool, prompt: str
) -> Path:
    """A wrk script; each call numbers its requests from a new start, so that no run
    repeats another's texts (taskgate's embedding cache would answer them)."""
    start = next(_runs) * 10_000_000
    text = f'"{prompt} " .. word(n)' if vary else f'"{prompt}"'
    extra = 'wrk.headers["Cache-Control"] = "no-cache, no-store"' if no_cache else ""
    path = directory / f"run-{start // 10_000_000}.lua"
    path.write_text(
        WRK_SCRIPT.format(
            key=API_KEY,
            extra_headers=extra,
            start=start,
            text=text,
            model=model,
            stream=str(stream).lower(),
        )
    )
    return path


def measure(
    name: str,
    port: int,
    pid: int | None,
    *,
    model: str,
    vary: bool = True,
    no_cache: bool = False,
    prompt: str,
    duration: int,
    directory: Path,
) -> TargetResult:
    url = f"http://127.0.0.1:{port}"
    result = TargetResult(name)
    hits_before, sent = cache_hits(port) if name.startswith("taskgate") else None, 0
    for stream in (False, True):
        # Warm up: connections, lazy imports, JIT-like caches.
        warmup = script_for(directory, model, stream, vary, no_cache, prompt)
        sent += int(run_wrk(url, warmup, 4, 2)["requests"])
        for concurrency in CONCURRENCY:
            script = script_for(directory, model, stream, vary, no_cache, prompt)
            cpu_before = cpu_seconds(pid)
            stats = run_wrk(url, script, concurrency, duration)
            cpu_after = cpu_seconds(pid)
            sent += int(stats["requests"])
            cpu_ms = None
            if cpu_before is not None and cpu_after is not None and stats["requests"]:
                cpu_ms = round((cpu_after - cpu_before) * 1000 / stats["requests"], 3)
            point = Point(
                target=name,
                stream=stream,
                concurrency=concurrency,
                requests=int(stats["requests"]),
                rps=round(stats["rps"], 1),
                p50_ms=round(stats["p50_ms"], 3),
                p99_ms=round(stats["p99_ms"], 3),
                errors=int(stats["errors"]),
                cpu_ms_per_request=cpu_ms,
            )
            result.points.append(point)
            print(
                f"  {name:15s} {'stream' if stream else 'plain ':6s} c={concurrency:<3d}"
                f" {point.rps:9.1f} req/s  p50 {point.p50_ms:8.3f} ms  p99 {point.p99_ms:8.3f} ms"
                f"  errors {point.errors}  cpu/req {cpu_ms} ms",
                flush=True,
            )
    start = next(_runs) * 10_000_000
    bodies = [
        json.dumps(
            {
                "model": model,
                "stream": True,
                "max_tokens": 32,
                "messages": [{"role": "user", "content": f"{prompt} {letters(start + i)}"}],
            }
        ).encode()
        for i in range(TTFC_REQUESTS)
    ]
    headers = "cache-control: no-cache, no-store\r\n" if no_cache else ""
    result.ttfc_p50_ms = round(first_chunk_ms(port, bodies, headers), 3)
    if hits_before is not None and not no_cache:
        sent += TTFC_REQUESTS
        result.cache_hit_share = round((cache_hits(port) - hits_before) / max(sent, 1), 4)
    return result


def cache_hits(port: int) -> float:
    """taskgate's response cache hits so far (all kinds), from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(value)
        for value in re.findall(r"^taskgate_cache_hits_total\{[^}]*\} (\S+)$", text, re.MULTILINE)
    )


def point(result: TargetResult, stream: bool, concurrency: int) -> Point:
    return next(p for p in result.points if p.stream == stream and p.concurrency == concurrency)


def table(results: list[TargetResult]) -> str:
    direct = next((r for r in results if r.target == "direct"), None)
    head = [
        "target", "p50 c=1 (ms)", "added p50 c=1 (ms)", "CPU/req c=1 (ms)", "req/s c=16",
        "req/s c=64", "p50 c=64 (ms)", "streams/s c=1", "streams/s c=64", "first chunk p50 (ms)",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        one, sixteen, many = point(r, False, 1), point(r, False, 16), point(r, False, 64)
        s1, s64 = point(r, True, 1), point(r, True, 64)
        added = one.p50_ms - point(direct, False, 1).p50_ms if direct else float("nan")
        cpu = "-" if one.cpu_ms_per_request is None else f"{one.cpu_ms_per_request:.2f}"
        lines.append(
            f"| {r.target} | {one.p50_ms:.2f} | {added:+.2f} | {cpu} | {sixteen.rps:.0f} | "
            f"{many.rps:.0f} | {many.p50_ms:.1f} | {s1.rps:.0f} | {s64.rps:.0f} | "
            f"{r.ttfc_p50_ms:.2f} |"
        )
    return "\n".join(lines)


def ratios(results: list[TargetResult]) -> dict[str, dict[str, float]]:
    by = {r.target: r for r in results}
    if "litellm" not in by or "direct" not in by:
        return {}
    base = point(by["direct"], False, 1).p50_ms
    lite = by["litellm"]
    lite_added = point(lite, False, 1).p50_ms - base
    out: dict[str, dict[str, float]] = {}
    for name, r in by.items():
        if not name.startswith("taskgate"):
            continue
        added = point(r, False, 1).p50_ms - base
        out[name] = {
            "added_p50_c1_vs_litellm": round(added / lite_added, 3),
            "rps_c64_vs_litellm": round(point(r, False, 64).rps / point(lite, False, 64).rps, 2),
            "streams_c64_vs_litellm": round(point(r, True, 64).rps / point(lite, True, 64).rps, 2),
        }
    return out


# Runs `taskgate` from the checkout named by its first argument: the editable install's
# import hook (which maps our packages to this checkout) is taken out first.
BASELINE_LAUNCHER = """
import sys
source = sys.argv.pop(1)
sys.meta_path[:] = [f for f in sys.meta_path if "_editable_" not in repr(f)]
sys.path.insert(0, source)
sys.argv[0] = "taskgate"
from gateway.cli import main
sys.exit(main())
"""


def against_baseline(results: list[TargetResult]) -> dict[str, float]:
    """taskgate-fixed over the baseline's: throughput ratios (over 1 is faster) and the
    difference in added latency at c=1."""
    by = {r.target: r for r in results}
    new, old = by.get("taskgate-fixed"), by.get("taskgate-fixed@baseline")
    if new is None or old is None:
        return {}
    out: dict[str, float] = {}
    for stream, concurrency in ((False, 1), (False, 16), (False, 64), (True, 1), (True, 64)):
        kind = "streams" if stream else "rps"
        ratio = point(new, stream, concurrency).rps / point(old, stream, concurrency).rps
        out[f"{kind}_c{concurrency}_ratio"] = round(ratio, 3)
    delta = point(new, False, 1).p50_ms - point(old, False, 1).p50_ms
    out["p50_c1_difference_ms"] = round(delta, 3)
    return out


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TASKGATE_AUTH"))}
    env.update(
        {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    )
    env.update(extra or {})
    return env


def litellm_venv() -> Path:
    out = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "litellm_env.sh")],
        capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    return Path(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds per point")
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument("--taskgate", default=str(REPO / ".venv" / "bin" / "taskgate"))
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "overhead.json"
    )
    parser.add_argument(
        "--baseline", type=Path, help="an earlier checkout: its taskgate-fixed is measured too"
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk is missing: apt-get install -y wrk")
    if (os.cpu_count() or 1) < 2:
        parser.error("needs two cores (gateway on one, stub and load on the other)")

    results: list[TargetResult] = []
    with tempfile.TemporaryDirectory(prefix="taskgate-overhead-") as tmp:
        directory = Path(tmp)
        stub_port = free_port()
        stub = [
            sys.executable,
            str(REPO / "benchmarks" / "stub_upstream.py"),
            "--port",
            str(stub_port),
        ]
        with started(
            stub, f"http://127.0.0.1:{stub_port}/v1/models", LOAD_CORE, environment(), 30,
            directory / "stub.log",
        ):  # fmt: skip
            common: dict[str, Any] = {
                "duration": args.duration, "directory": directory, "prompt": PROMPT
            }  # fmt: skip
            if "direct" in args.targets:
                print("direct (the stub alone)", flush=True)
                results.append(measure("direct", stub_port, None, model="stub", **common))
            if "litellm" in args.targets:
                venv = litellm_venv()
                port = free_port()
                config = directory / "litellm.yaml"
                config.write_text(LITELLM_CONFIG.format(stub_port=stub_port, key=API_KEY))
                command = [
                    str(venv / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1",
                    "--port", str(port), "--num_workers", "1",
                ]  # fmt: skip
                env = environment({"LITELLM_LOG": "ERROR", "DISABLE_SCHEMA_UPDATE": "true"})
                ready = f"http://127.0.0.1:{port}/health/liveliness"
                with started(
                    command, ready, GATEWAY_CORE, env, 180, directory / "litellm.log"
                ) as p:
                    print("litellm", flush=True)
                    results.append(measure("litellm", port, p.pid, model="stub", **common))
            for embedder, names in EMBEDDERS.items():
                wanted = [t for t in args.targets if t in names]
                if wanted:
                    results += run_taskgate([args.taskgate], embedder, wanted, stub_port, common)
            if args.baseline is not None:
                command = [sys.executable, "-c", BASELINE_LAUNCHER, str(args.baseline.resolve())]
                default = ("auto", "auto")
                rows = run_taskgate(command, default, ["taskgate-fixed"], stub_port, common)
                results += [replace(row, target="taskgate-fixed@baseline") for row in rows]

    print()
    print(table(results))
    compared = ratios(results)
    against = against_baseline(results)
    if against:
        compared["taskgate-fixed vs baseline"] = against
    if compared:
        print()
        for name, values in compared.items():
            print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in values.items()))
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "pinning": f"gateway on core {GATEWAY_CORE}; stub and wrk on core {LOAD_CORE}",
        "duration_s": args.duration,
        "when": time.strftime("%Y-%m-%d %H:%M"),
    }
    payload = {"meta": meta, "results": [asdict(r) for r in results], "ratios": compared}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


def run_taskgate(
    taskgate: list[str],
    embedder: tuple[str, str],
    wanted: list[str],
    stub_port: int,
    common: dict[str, Any],
    extra_env: dict[str, str] | None = None,
) -> list[TargetResult]:
    """One taskgate process (embedder at (precision, runtime); `taskgate` is its command)
    measured for each target."""
    directory: Path = common["directory"]
    port = free_port()
    precision, runtime = embedder
    config = directory / f"taskgate-{precision}-{runtime}.yaml"
    config.write_text(
        TASKGATE_CONFIG.format(port=port, stub_port=stub_port, precision=precision, runtime=runtime)
    )
    command = [*taskgate, "serve", "--config", str(config)]
    env = environment({"TASKGATE_HOME": str(directory / "home"), **(extra_env or {})})
    ready = f"http://127.0.0.1:{port}/readyz"
    log = directory / f"taskgate-{precision}-{runtime}-{len(extra_env or {})}.log"
    rows = []
    with started(command, ready, GATEWAY_CORE, env, 180, log) as process:
        for name in wanted:
            print(name, flush=True)
            if name == "taskgate-fixed":
                options = {"model": "stub", "no_cache": True}
            elif name.startswith("taskgate-auto"):
                options = {"model": "auto", "no_cache": True}
            else:
                seed_cache(port)
                options = {"model": "auto", "no_cache": False, "prompt": CACHE_SEED_PROMPT}
            check_route(port, name, options)
            rows.append(measure(name, port, process.pid, **{**common, **options}))
    return rows


def check_route(port: int, name: str, options: dict[str, Any]) -> None:
    """The target measures what it says: dispatched to the stub (never a clarification),
    and for `taskgate-cache`, answered from the cache."""
    text = f"{options.get('prompt', PROMPT)} {letters(999_999_999)}"
    body = {"model": options["model"], "max_tokens": 32,
            "messages": [{"role": "user", "content": text}]}  # fmt: skip
    headers = {"content-type": "application/json"}
    if options["no_cache"]:
        headers["cache-control"] = "no-cache, no-store"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(), headers
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        route = json.loads(response.read())["route"]
    wanted_cache = "semantic" if name == "taskgate-cache" else None
    if route["expert"] != "stub" or route["action"] == "clarify" or route["cached"] != wanted_cache:
        raise RuntimeError(f"{name} would not measure its path: route {route}")


def seed_cache(port: int) -> None:
    """One answered request whose text the cache-hit requests are close to."""
    body = json.dumps(
        {
            "model": "auto",
            "max_tokens": 32,
            "messages": [{"role": "user", "content": CACHE_SEED_PROMPT}],
        }
    ).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=body,
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


if __name__ == "__main__":
    raise SystemExit(main())
