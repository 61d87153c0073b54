"""Health-aware dispatch against a real upstream process that goes down and comes back.

The upstream is another `taskgate serve` process (an OpenAI-compatible server like any
other). While requests flow, it is stopped and later restarted on the same port. Traffic
for the expert with a fallback must move to the fallback within the probe interval and
back after recovery; the expert without one answers the documented 503 meanwhile. No
other 5xx is allowed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import GatewayProcess, gateway_process

pytestmark = pytest.mark.integration

PROBE_INTERVAL_S = 0.5
UPSTREAM = """
auth: none
experts:
  - {name: calculator, kind: tool, tool: calculator, description: arithmetic,
     examples: [what is 2 + 2]}
"""
GATEWAY = """
health: {{interval_s: {interval}, jitter: 0.1, timeout_s: 1}}
auth: none
experts:
  - name: remote
    kind: openai
    base_url: {upstream}/v1
    model: calculator
    max_retries: 0
    fallbacks: [local]
    description: arithmetic on the remote server
    examples: [what is 2 + 2]
  - name: lonely
    kind: openai
    base_url: {upstream}/v1
    model: calculator
    max_retries: 0
    description: arithmetic on the remote server, no fallback
    examples: [compute 3 * 3]
  - {{name: local, kind: tool, tool: calculator, description: local arithmetic,
      examples: [add 1 and 1]}}
"""


@dataclass
class Sample:
    at: float
    model: str
    status: int
    expert: str | None
    reason: str | None


class Load:
    """Requests to `remote` and `lonely`, one after another, until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self._stop.is_set():
                for model in ("remote", "lonely"):
                    body = {"model": model, "messages": [{"role": "user", "content": "7 * 6"}]}
                    response = http.post("/v1/chat/completions", json=body)
                    route = response.json().get("route", {}) if response.status_code == 200 else {}
                    self.samples.append(
                        Sample(time.monotonic(), model, response.status_code,
                               route.get("expert"), route.get("reason"))
                    )  # fmt: skip
                time.sleep(0.02)

    def since(self, at: float, model: str) -> list[Sample]:
        return [s for s in self.samples if s.at >= at and s.model == model]


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[GatewayProcess]:
    config = tmp_path / "upstream.yaml"
    config.write_text(UPSTREAM)
    process = GatewayProcess(config, name="upstream")
    process.start()
    try:
        yield process
    finally:
        process.stop()


def wait_for(load: Load, model: str, expert: str, after: float, within_s: float) -> float:
    """When `model`'s requests were first answered by `expert` after `after` (fails if never)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        hits = [s for s in load.since(after, model) if s.expert == expert]
        if hits:
            return hits[0].at
        time.sleep(0.05)
    raise AssertionError(f"{model} was not answered by {expert} within {within_s}s")


def test_traffic_moves_to_the_fallback_and_back(upstream: GatewayProcess, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(GATEWAY.format(interval=PROBE_INTERVAL_S, upstream=upstream.url))
    with gateway_process(config) as url, Load(url) as load:
        wait_for(load, "remote", "remote", 0, 10)
        stopped = time.monotonic()
        upstream.stop()
        moved = wait_for(load, "remote", "local", stopped, 10)
        assert moved - stopped <= PROBE_INTERVAL_S * 2 + 1.0
        time.sleep(PROBE_INTERVAL_S * 3)
        experts = httpx.get(f"{url}/admin/experts").json()["data"]
        assert {e["name"]: e["healthy"] for e in experts} == {
            "remote": False, "lonely": False, "local": True,
        }  # fmt: skip
        restarted = time.monotonic()
        upstream.start()
        back = wait_for(load, "remote", "remote", restarted, 15)
        assert back - restarted <= 10
        time.sleep(PROBE_INTERVAL_S * 2)
    statuses = {(s.model, s.status) for s in load.samples}
    # No 5xx but the documented 503 for the expert without a fallback.
    assert statuses <= {("remote", 200), ("lonely", 200), ("lonely", 503)}
    assert ("lonely", 503) in statuses
    outage = [s for s in load.samples if s.model == "remote" and s.expert == "local"]
    assert outage and all("remote" in (s.reason or "") for s in outage)
    assert load.samples[-1].expert in ("remote", "lonely")
