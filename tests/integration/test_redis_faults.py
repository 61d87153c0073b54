"""Redis goes away while requests flow: nothing fails, and nothing learned is lost.

A gateway process serves a bounded loop of chat requests and exemplar writes while its
redis-server (with AOF, as deployed) is stopped and later restarted on the same port. No
request may fail, `/readyz` must say "degraded" during the outage, and afterwards every
exemplar written during the outage must be in Redis, and still there after the gateway
restarts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis

from tests.support.gateway import gateway_process
from tests.support.redis import RedisServer, plain_redis

pytestmark = pytest.mark.integration

CONFIG = """
memory: {backend: redis, url: "${TASKGATE_REDIS_URL}"}
auth: none
experts:
  - name: calculator
    kind: tool
    tool: calculator
    description: arithmetic with numbers
    examples: [what is 15% of 80, compute 3.5 * (12 - 4)]
  - name: units
    kind: tool
    tool: units
    description: converting measurements between units
    examples: [convert 5 miles to km, how many ounces in 2 kg]
"""


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[RedisServer, Path]]:
    config = tmp_path / "taskgate.yaml"
    config.write_text(CONFIG)
    # AOF, as deployed: what Redis acknowledged before the outage survives its restart.
    with RedisServer(plain_redis(), aof=True) as redis:
        yield redis, config


def chat(http: httpx.Client, i: int) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": f"what is {i}% of 80"}]}
    return http.post("/v1/chat/completions", json=body)


def learn(http: httpx.Client, i: int) -> httpx.Response:
    body = {"expert": "units", "text": f"how many stones in {i} kg", "response": f"{i} kg"}
    return http.post("/v1/exemplars", json=body)


def stored_texts(url: str) -> set[str]:
    client = Redis.from_url(url, socket_timeout=2)
    texts = set()
    for key in client.scan_iter(match="taskgate:exemplars:rec:*"):
        text = client.hget(key, "text")
        if text is not None:
            texts.add(text.decode())
    client.close()
    return texts


def test_redis_outage_fails_no_request_and_loses_no_exemplar(
    setup: tuple[RedisServer, Path],
) -> None:
    redis, config = setup
    env = {"TASKGATE_REDIS_URL": redis.url}
    failures: list[tuple[int, int, str]] = []
    learned: list[str] = []
    with gateway_process(config, env) as url, httpx.Client(base_url=url, timeout=30) as http:
        statuses = []
        for i in range(60):  # a bounded loop: Redis dies at 20 and comes back at 40
            if i == 20:
                redis.stop()
            if i == 40:
                redis.start()
            for response in (chat(http, i), learn(http, i)):
                if response.status_code >= 300:
                    failures.append((i, response.status_code, response.text))
            learned.append(f"how many stones in {i} kg")
            if 22 <= i < 40:
                statuses.append(http.get("/readyz").json()["status"])
            time.sleep(0.05)
        assert failures == []
        assert "degraded" in statuses
        # After recovery the queue is flushed and the store is ok again.
        deadline = time.monotonic() + 20
        while http.get("/readyz").json()["status"] != "ready" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert http.get("/readyz").json() == {"status": "ready"}
        assert set(learned) <= stored_texts(redis.url)
    # A fresh gateway process finds everything in Redis.
    with gateway_process(config, env) as url, httpx.Client(base_url=url, timeout=30) as http:
        listed: list[dict[str, Any]] = http.get("/v1/exemplars", params={"limit": 1000}).json()[
            "data"
        ]
        assert set(learned) <= {e["text"] for e in listed}
