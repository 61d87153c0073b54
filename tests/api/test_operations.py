"""Operations through the HTTP API: health-aware dispatch, concurrency limits, admin routes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from experts.registry import ExpertSet
from gateway.api.app import build_app
from gateway.config import parse_config
from gateway.service import Gateway
from tests.api.conftest import local_memory, wait_ready
from tests.fakes import KeywordEmbedder, ScriptedExpert
from tests.support.asgi import serve
from tests.support.keys import auth_block, entry, token

CONFIG = (
    auth_block(entry("ops", admin=True), entry("user", tenant="users"))
    + """
health: {interval_s: 0.2, jitter: 0, timeout_s: 1}
experts:
  - {name: sick, kind: tool, tool: calculator, description: x, examples: [sick],
     fallbacks: [spare]}
  - {name: dying, kind: tool, tool: calculator, description: x, examples: [dying]}
  - {name: spare, kind: tool, tool: calculator, description: x, examples: [spare]}
  - {name: narrow, kind: tool, tool: calculator, description: x, examples: [narrow],
     max_concurrency: 1, queue_timeout_s: 0.2, cache_ttl_s: 0}
"""
)
USER = {"authorization": f"Bearer {token('user')}"}
OPS = {"authorization": f"Bearer {token('ops')}"}


@pytest.fixture(scope="module")
def experts() -> dict[str, ScriptedExpert]:
    return {
        "sick": ScriptedExpert("sick", ["from sick"], healthy=False),
        "dying": ScriptedExpert("dying", ["from dying"], healthy=False),
        "spare": ScriptedExpert("spare", ["from spare"]),
        "narrow": ScriptedExpert("narrow", ["slow"], delay_s=0.6),
    }


@pytest.fixture(scope="module")
def url(experts: dict[str, ScriptedExpert]) -> Iterator[str]:
    config = parse_config(CONFIG, "ops.yaml", {})
    gateway = Gateway(config, KeywordEmbedder(list(experts)),
                      ExpertSet(list(experts.values())), local_memory())  # fmt: skip
    with serve(build_app(gateway, 1 << 20)) as base:
        wait_ready(base)
        yield base


def chat(url: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=USER, timeout=10)


def test_an_unhealthy_expert_is_served_by_its_fallback(url: str) -> None:
    response = chat(url, "sick")
    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "from spare"
    assert body["route"]["expert"] == "spare"
    assert body["route"]["reason"] == "explicit+unhealthy_sick"


def test_an_unhealthy_expert_without_fallback_is_a_503_naming_it(url: str) -> None:
    response = chat(url, "dying")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "expert_unavailable"
    assert "expert 'dying' is unavailable" in error["message"]


def test_a_full_expert_answers_429_after_its_queue_timeout(url: str) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(chat, url, "narrow")
        time.sleep(0.1)
        second = pool.submit(chat, url, "narrow")
        statuses = sorted([first.result().status_code, second.result().status_code])
    assert statuses == [200, 429]
    # Once the slot is free again, requests get through.
    assert chat(url, "narrow").status_code == 200


def test_admin_experts_reports_health_and_counts(url: str) -> None:
    data = httpx.get(f"{url}/admin/experts", headers=OPS).json()["data"]
    by_name = {e["name"]: e for e in data}
    assert by_name["sick"]["healthy"] is False
    assert by_name["spare"]["healthy"] is True
    assert by_name["spare"]["kind"] == "tool"
    assert by_name["spare"]["examples"] == 1
    assert by_name["spare"]["exemplars"] == 0


def test_admin_routes_need_an_admin_key(url: str) -> None:
    assert httpx.get(f"{url}/admin/experts", headers=USER).status_code == 403
    assert httpx.get(f"{url}/admin/experts").status_code == 401
    # This app was built without a config file: nothing to reload.
    refused = httpx.post(f"{url}/admin/reload", headers=OPS)
    assert refused.status_code == 400
    assert "nothing to reload" in refused.json()["error"]["message"]


def test_recovery_is_noticed_by_the_probes(url: str, experts: dict[str, ScriptedExpert]) -> None:
    assert chat(url, "dying").status_code == 503
    experts["dying"].healthy = True
    deadline = time.monotonic() + 5
    while chat(url, "dying").status_code != 200:
        assert time.monotonic() < deadline, "the probe did not notice the recovery"
        time.sleep(0.1)
    assert chat(url, "dying").json()["route"]["expert"] == "dying"
