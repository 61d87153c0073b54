"""Two gateway processes on one Redis: what one learns, the other knows.

* a clarification resolved on A routes without asking on B;
* feedback given on A becomes a few-shot exemplar on B (checked against the real vLLM:
  B's prompt is exactly the few-shot conversation);
* a cache hit on B serves A's answer, and another tenant does not get it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest

from tests.support.gateway import gateway_process
from tests.support.keys import auth_block, entry, token
from tests.support.redis import RedisServer, plain_redis
from tests.support.vllm import VLLMServer

pytestmark = pytest.mark.integration

T = TypeVar("T")
CONFIG = (
    auth_block(
        entry("acme", admin=True), entry("globex", admin=True), entry("acme-reader", tenant="acme")
    )
    + """memory: {backend: redis, url: "${TASKGATE_REDIS_URL}"}
experts:
  - name: calculator
    kind: tool
    tool: calculator
    ask: do arithmetic
    description: arithmetic with numbers, percentages, powers and parentheses
    examples: [what is 15% of 80, compute 3.5 * (12 - 4), what's 7 times 6]
  - name: units
    kind: tool
    tool: units
    ask: convert units
    description: converting measurements between units
    examples: [convert 5 miles to km, how many ounces in 2 kg, what is 3 feet in meters]
  - name: smol
    kind: openai
    base_url: {base_url}
    model: {model}
    fewshot: 2
    description: general conversation and writing
    examples: [tell me a short joke, write a haiku about autumn, describe a cat]
"""
)
AMBIGUOUS = "how much is 12 kg times 4"


class Replica:
    def __init__(self, url: str) -> None:
        self.url = url

    def client(self, tenant: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=token(tenant), max_retries=0)

    def post(self, tenant: str, path: str, body: dict[str, Any]) -> httpx.Response:
        headers = {"authorization": f"Bearer {token(tenant)}"}
        return httpx.post(f"{self.url}{path}", json=body, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def replicas(
    vllm_server: VLLMServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Replica, Replica]]:
    config = Path(tmp_path_factory.mktemp("replicas")) / "taskgate.yaml"
    text = CONFIG.replace("{base_url}", vllm_server.base_url).replace("{model}", vllm_server.model)
    config.write_text(text)
    with RedisServer(plain_redis()) as redis:
        env = {"TASKGATE_REDIS_URL": redis.url}
        with (
            gateway_process(config, env, name="replica-a") as a,
            gateway_process(config, env, name="replica-b") as b,
        ):
            yield Replica(a), Replica(b)


def ask(client: openai.OpenAI, *turns: str, **options: Any) -> Any:
    roles = ["user", "assistant"]
    messages = [{"role": roles[i % 2], "content": text} for i, text in enumerate(turns)]
    options.setdefault("model", "auto")
    options.setdefault("temperature", 0)  # deterministic: only such answers are cached
    return client.chat.completions.create(messages=messages, **options)


def eventually(check: Callable[[], T], ok: Callable[[T], bool], within_s: float = 5.0) -> T:
    """Poll `check` until `ok`; replicas catch up through Redis within about a second."""
    deadline = time.monotonic() + within_s
    while True:
        value = check()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def route(answer: Any) -> dict[str, Any]:
    found: dict[str, Any] = answer.model_extra["route"]
    return found


def test_clarification_answered_on_a_routes_without_asking_on_b(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    asked = ask(a.client("acme"), AMBIGUOUS)
    assert route(asked)["action"] == "clarify"
    answered = ask(a.client("acme"), AMBIGUOUS, asked.choices[0].message.content, "units")
    assert answered.model == "units"
    assert answered.choices[0].message.content == "12 kg * 4 = 48 kg"
    on_b = eventually(
        lambda: ask(b.client("acme"), AMBIGUOUS), lambda r: route(r)["action"] == "dispatch"
    )
    assert route(on_b)["action"] == "dispatch"
    assert on_b.model == "units"
    # Learned for acme only.
    assert route(ask(b.client("globex"), AMBIGUOUS))["action"] == "clarify"


def test_feedback_on_a_is_a_fewshot_example_on_b(
    replicas: tuple[Replica, Replica], vllm_server: VLLMServer
) -> None:
    a, b = replicas
    first = ask(
        a.client("acme"),
        "describe a cat in one sentence",
        model="smol",
        temperature=0,
        max_tokens=16,
    )
    rated = a.post("acme", "/v1/feedback", {"id": first.id, "rating": 1})
    assert rated.status_code == 200, rated.text
    request = "describe a dog in one sentence"
    on_b = eventually(
        lambda: ask(b.client("acme"), request, model="smol", temperature=0, max_tokens=16),
        lambda r: route(r)["fewshot"] == 1,
    )
    assert route(on_b)["fewshot"] == 1
    # vLLM saw exactly the few-shot conversation: the same prompt as asking it directly.
    direct = openai.OpenAI(base_url=vllm_server.base_url, api_key="unused").chat.completions.create(
        model=vllm_server.model,
        messages=[
            {"role": "user", "content": "describe a cat in one sentence"},
            {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": request},
        ],
        temperature=0,
        max_tokens=16,
    )
    assert on_b.usage.prompt_tokens == direct.usage.prompt_tokens
    assert on_b.choices[0].message.content == direct.choices[0].message.content
    # The other tenant's requests get no few-shot turns.
    globex = ask(b.client("globex"), request, model="smol", temperature=0, max_tokens=16)
    assert route(globex)["fewshot"] == 0


def test_cache_hit_on_b_for_as_answer_but_not_for_another_tenant(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    question = "what is 17% of 240"
    first = ask(a.client("acme"), question)
    assert route(first)["cached"] is None
    on_b = eventually(
        lambda: ask(b.client("acme"), question), lambda r: route(r)["cached"] == "exact"
    )
    assert route(on_b)["cached"] == "exact"
    assert on_b.choices[0].message.content == first.choices[0].message.content
    assert route(ask(b.client("globex"), question))["cached"] is None
