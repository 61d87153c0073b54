"""Live reload under a bounded concurrent load against the real gateway process.

Experts are added and examples changed by editing the config and reloading (the admin
endpoint, SIGHUP, and `--watch`); an invalid config changes nothing. No request may fail
while this happens.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.integration

BASE = """
router: {threshold: 0.3}
auth: none
experts:
  - name: calculator
    kind: tool
    tool: calculator
    description: arithmetic with numbers
    examples: [what is 15% of 80, compute 3.5 * (12 - 4), what's 7 times 6]
  - name: units
    kind: tool
    tool: units
    description: converting measurements between units
    examples: [convert 5 miles to km, how many ounces in 2 kg]
"""
WEIGHTS = """
  - name: weights
    kind: tool
    tool: units
    description: body weight in kilograms and pounds
    examples: [how heavy is 70 kg in pounds, what do i weigh in stones if i am 80 kg]
"""
WEIGHT_QUESTION = "how heavy is 90 kg in pounds"


class Load:
    """Four workers sending chat requests until stopped; every failure is recorded."""

    def __init__(self, url: str, workers: int = 4) -> None:
        self.url = url
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        texts = ["what is 15% of 80", "convert 5 miles to km", WEIGHT_QUESTION]
        with httpx.Client(base_url=self.url, timeout=30) as http:
            i = 0
            while not self._stop.is_set():
                body = {"messages": [{"role": "user", "content": texts[i % len(texts)]}]}
                try:
                    response = http.post("/v1/chat/completions", json=body)
                    if response.status_code == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"{response.status_code}: {response.text}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                i += 1


def route(url: str, text: str) -> dict[str, object]:
    found: dict[str, object] = httpx.post(f"{url}/v1/route", json={"input": text}).json()["route"]
    return found


def experts(url: str) -> dict[str, dict[str, object]]:
    """Each expert as configured (without its live request counts and latency)."""
    live = ("requests", "latency_ms")
    return {
        e["name"]: {k: v for k, v in e.items() if k not in live}
        for e in httpx.get(f"{url}/admin/experts").json()["data"]
    }


def eventually(check: Callable[[], bool], within_s: float = 10) -> bool:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_reloads_under_load_drop_no_request(tmp_path: Path) -> None:
    config = tmp_path / "taskgate.yaml"
    config.write_text(BASE)
    gateway = GatewayProcess(config)
    gateway.start()
    try:
        url = gateway.url
        with Load(url) as load:
            assert route(url, WEIGHT_QUESTION)["expert"] == "units"
            # 1. Add an expert: it routes right after the reload.
            config.write_text(BASE + WEIGHTS)
            reloaded = httpx.post(f"{url}/admin/reload")
            assert reloaded.status_code == 200, reloaded.text
            assert reloaded.json()["experts"] == ["calculator", "units", "weights"]
            assert route(url, WEIGHT_QUESTION)["expert"] == "weights"
            assert experts(url)["weights"]["kind"] == "tool"
            # 2. Change examples (SIGHUP this time): the weight question goes back to units.
            config.write_text(
                BASE.replace("how many ounces in 2 kg", WEIGHT_QUESTION)
                + WEIGHTS.replace("how heavy is 70 kg in pounds", "how heavy is a feather")
            )
            assert gateway.handle is not None
            os.kill(gateway.handle.pid, signal.SIGHUP)
            assert eventually(lambda: route(url, WEIGHT_QUESTION)["expert"] == "units")
            # 3. An invalid config changes nothing, and says where it is wrong.
            before = experts(url)
            config.write_text(
                BASE + "  - {name: broken, kind: tool, tool: abacus, description: x}\n"
            )
            refused = httpx.post(f"{url}/admin/reload")
            assert refused.status_code == 400
            assert "experts.2.tool" in refused.json()["error"]["message"]
            assert experts(url) == before
            assert route(url, WEIGHT_QUESTION)["expert"] == "units"
            time.sleep(0.5)
        gateway.check_alive()
    finally:
        gateway.stop()
    assert load.failures == []
    assert load.ok > 50


def test_watch_reloads_when_the_file_changes(tmp_path: Path) -> None:
    config = tmp_path / "taskgate.yaml"
    config.write_text(BASE)
    gateway = GatewayProcess(config, args=["--watch"])
    gateway.start()
    try:
        assert "weights" not in experts(gateway.url)
        config.write_text(BASE + WEIGHTS)
        assert eventually(lambda: "weights" in experts(gateway.url))
        assert route(gateway.url, WEIGHT_QUESTION)["expert"] == "weights"
    finally:
        gateway.stop()
