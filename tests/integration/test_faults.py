"""Faults at the gateway's edges, injected against real processes on loopback.

One `taskgate serve` process, its memory in a real redis-server (with AOF, as deployed),
sits in front of an upstream that misbehaves on purpose (tests/support/faults.py: the
requested model picks the fault). Each fault has an expert of its own, and each fault
that strikes before the first token also has a twin with `fallbacks: [ok]`.

For every fault, streamed and not, the client gets a clear OpenAI error: a 5xx with an
`{"error": {...}}` body, or, once the headers are out, one SSE error event followed by
`data: [DONE]`; or the fallback's answer where one is configured. A timeout is not
retried on a fallback: the request's deadline is spent (see `gateway/streams.py`).

After every case nothing is left behind: every request the upstream received has ended
(the gateway closed what it gave up on), the upstream's open connections return to zero
(the openai expert drops idle pooled connections after a few seconds), the gateway's
`taskgate_event_loop_tasks` returns to its idle level, and every exemplar learned so far
is still listed.

Redis: test_redis_faults.py stops Redis cleanly (SIGTERM) around a loop of requests and
checks that every write lands. Here it is SIGKILLed with a stream in flight and restarted
while requests flow, and what was learned before the kill is still there after it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.test_redis_faults import stored_texts
from tests.support.faults import ANSWER, Call, FaultUpstream
from tests.support.gateway import GatewayProcess
from tests.support.redis import RedisServer, plain_redis

pytestmark = pytest.mark.integration

FAULT_TIMEOUT_S = 3.0
# Client-side limits: past them the gateway hung, which is the failure under test.
CLIENT_TIMEOUT_S = FAULT_TIMEOUT_S + 20.0
# How long leftovers may take to go: the pool's keep-alive expiry (3 s), with room for a
# busy machine. Each wait ends as soon as its condition holds.
SETTLE_S = 30.0
# A client that goes away must stop the upstream's answer well before any timeout would.
CANCEL_BOUND_S = 10.0
TASKS = re.compile(r"^taskgate_event_loop_tasks (\S+)$", re.MULTILINE)

# expert, status, code, whether the fault strikes after the first token
FAILURES = [
    ("fail500", 502, "expert_failed", False),
    ("hang", 504, "expert_timeout", False),
    ("hang-fb", 504, "expert_timeout", False),
    ("hang-mid", 504, "expert_timeout", True),
    ("cut-early", 502, "expert_failed", False),
    ("cut", 502, "expert_failed", True),
    ("badjson", 502, "expert_failed", False),
    ("badjson-mid", 502, "expert_failed", True),
    ("badshape", 502, "expert_failed", False),
    ("badshape-mid", 502, "expert_failed", True),
]
FALLBACKS = ["fail500-fb", "cut-early-fb", "badjson-fb", "badshape-fb"]


@dataclass
class Rig:
    url: str
    upstream: FaultUpstream
    redis: RedisServer
    gateway: GatewayProcess
    idle_tasks: int = 0
    learned: dict[str, str] = field(default_factory=dict)  # exemplar id -> text

    def client(self, timeout: float = CLIENT_TIMEOUT_S) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)


def config_for(upstream: str, redis: str) -> dict[str, Any]:
    def openai(name: str, **options: Any) -> dict[str, Any]:
        model = name.removesuffix("-fb")
        # A plain request is asked for whole: nothing arrives before the whole answer, so
        # the total timeout is what ends a hang there (`timeout_s` ends it in a stream).
        spec = {
            "name": name, "kind": "openai", "base_url": f"{upstream}/v1", "model": model,
            "description": f"a test upstream answering as '{model}'",
            "timeout_s": FAULT_TIMEOUT_S, "total_timeout_s": FAULT_TIMEOUT_S, "max_retries": 1,
        }  # fmt: skip
        if name.endswith("-fb"):
            spec["fallbacks"] = ["ok"]
        return {**spec, **options}

    names = [name for name, *_ in FAILURES] + FALLBACKS
    return {
        "auth": "none",
        "memory": {"backend": "redis", "url": redis},
        "cache": {"enabled": False},
        # Probed once at start-up; a probe's connection would blur the leak checks.
        "health": {"interval_s": 3600, "jitter": 0, "timeout_s": 2},
        "experts": [
            {
                "name": "calculator",
                "kind": "tool",
                "tool": "calculator",
                "description": "arithmetic with numbers",
                "examples": ["what is 15% of 80", "compute 3.5 * (12 - 4)"],
            },
            openai("ok"),
            openai("slow", timeout_s=60, total_timeout_s=60),
            openai("endless", timeout_s=60, total_timeout_s=60),
            *(openai(name) for name in names),
        ],
    }


# -- the client's view ---------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: httpx.Headers
    body: dict[str, Any] | None  # a JSON body (a plain answer, or an error before headers)
    events: list[str]  # a stream's `data:` payloads

    def chunks(self) -> list[dict[str, Any]]:
        return [json.loads(e) for e in self.events if e != "[DONE]"]

    def text(self) -> str:
        if self.body is not None:
            return str(self.body["choices"][0]["message"]["content"])
        return "".join(
            c["choices"][0]["delta"].get("content", "") for c in self.chunks() if c.get("choices")
        )


def ask(rig: Rig, model: str, *, stream: bool, request_id: str) -> Answer:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"X-Request-Id": request_id}
    with rig.client() as http:
        r = http.post("/v1/chat/completions", json=body, headers=headers)
    if r.headers["content-type"].startswith("text/event-stream"):
        events = [
            line.removeprefix("data: ") for line in r.text.splitlines() if line.startswith("data: ")
        ]
        return Answer(r.status_code, r.headers, None, events)
    return Answer(r.status_code, r.headers, r.json(), [])


def tasks_alive(http: httpx.Client) -> int:
    found = TASKS.search(http.get("/metrics").text)
    assert found is not None, "/metrics has no taskgate_event_loop_tasks"
    return int(float(found.group(1)))


def wait_until(check: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (waited {within_s:g}s)")
        time.sleep(0.2)


def upstream_cancelled(rig: Rig, request_id: str, what: str) -> Call:
    """The request's one upstream call, once it ended with the gateway hanging up on it."""
    calls = rig.upstream.calls_for(request_id)
    assert len(calls) == 1
    wait_until(lambda: calls[0].outcome == "disconnected", CANCEL_BOUND_S, what)
    return calls[0]


def learn(rig: Rig, http: httpx.Client, text: str) -> None:
    response = http.post("/v1/exemplars", json={"expert": "ok", "text": text, "response": "ok"})
    assert response.status_code == 201, response.text
    rig.learned[response.json()["id"]] = text


def listed(http: httpx.Client) -> dict[str, str]:
    response = http.get("/v1/exemplars", params={"expert": "ok", "limit": 1000})
    assert response.status_code == 200, response.text
    return {e["id"]: e["text"] for e in response.json()["data"]}


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    config = tmp_path_factory.mktemp("faults") / "taskgate.yaml"
    with RedisServer(plain_redis(), aof=True) as redis, FaultUpstream() as upstream:
        config.write_text(yaml.safe_dump(config_for(upstream.url, redis.url)))
        gateway = GatewayProcess(config, name="taskgate-faults")
        gateway.start()
        try:
            rig = Rig(gateway.url, upstream, redis, gateway)
            for stream in (False, True):  # warm up: first requests, lazy imports, the pool
                assert ask(rig, "ok", stream=stream, request_id="warm-up").text() == ANSWER
            wait_until(lambda: upstream.open_connections() == 0, SETTLE_S, "pool not idle")
            with rig.client() as http:
                rig.idle_tasks = min(tasks_alive(http) for _ in range(3))
            yield rig
        finally:
            gateway.stop()


@pytest.fixture(autouse=True)
def leaves_nothing_behind(rig: Rig, request: pytest.FixtureRequest) -> Iterator[None]:
    """Learn an exemplar before the case; afterwards, check that nothing leaked or was lost."""
    with rig.client() as http:
        learn(rig, http, f"remember this before {request.node.name}")
    started = len(rig.upstream.calls)
    yield
    rig.gateway.check_alive()
    calls = rig.upstream.calls[started:]
    wait_until(
        lambda: all(call.outcome is not None for call in calls), SETTLE_S,
        f"upstream requests still running: {[c for c in calls if c.outcome is None]}",
    )  # fmt: skip
    wait_until(
        lambda: rig.upstream.open_connections() == 0, SETTLE_S,
        f"{rig.upstream.open_connections()} connections still open at the upstream",
    )  # fmt: skip
    with rig.client() as http:
        wait_until(
            lambda: tasks_alive(http) <= rig.idle_tasks, SETTLE_S,
            f"{tasks_alive(http)} asyncio tasks alive in the gateway, {rig.idle_tasks} when idle",
        )  # fmt: skip
        assert rig.learned.items() <= listed(http).items()


# -- upstream faults -------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(("expert", "status", "code", "mid_stream"), FAILURES)
def test_an_upstream_fault_is_a_clear_error(
    rig: Rig, expert: str, status: int, code: str, mid_stream: bool, stream: bool
) -> None:
    request_id = f"fault-{expert}-{stream}"
    answer = ask(rig, expert, stream=stream, request_id=request_id)
    assert rig.upstream.calls_for(request_id), "the upstream never saw the request"
    if stream and mid_stream:
        # The headers were out: the error comes in band, once, then the stream ends.
        assert answer.status == 200
        assert answer.events[-1] == "[DONE]"
        chunks = answer.chunks()
        errors = [c for c in chunks if "error" in c]
        assert errors == [chunks[-1]], answer.events
        assert errors[0]["error"]["code"] == code
        assert expert in errors[0]["error"]["message"]
        assert answer.text(), "the answer had started before the fault"
        return
    assert answer.status == status, answer
    assert answer.body is not None and answer.events == []
    error = answer.body["error"]
    assert error["code"] == code and error["type"] == "upstream_error"
    assert expert in error["message"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("expert", FALLBACKS)
def test_a_fault_before_the_first_token_falls_back(rig: Rig, expert: str, stream: bool) -> None:
    request_id = f"fallback-{expert}-{stream}"
    answer = ask(rig, expert, stream=stream, request_id=request_id)
    assert answer.status == 200, answer
    assert answer.text() == ANSWER
    assert answer.headers["x-route-expert"] == "ok"
    if stream:
        assert answer.events[-1] == "[DONE]"
        assert not any("error" in c for c in answer.chunks())
    models = [call.model for call in rig.upstream.calls_for(request_id)]
    assert models[0] == expert.removesuffix("-fb") and models[-1] == "ok"


# -- the client goes away ---------------------------------------------------------------------


def test_a_client_leaving_mid_stream_cancels_the_upstream_request(rig: Rig) -> None:
    request_id = "leaves-mid-stream"
    body = {"model": "endless", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"X-Request-Id": request_id}
    with (
        rig.client() as http,
        http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r,
    ):
        assert r.status_code == 200
        for line in r.iter_lines():
            if '"content":"tick ' in line:
                break  # the answer is flowing; now go away
    left = time.monotonic()  # the client and its connection are closed
    call = upstream_cancelled(
        rig, request_id, "the upstream's answer went on after the client left"
    )
    assert call.ended is not None and call.ended >= left - 1.0


def test_a_client_giving_up_on_a_plain_request_cancels_the_upstream_request(rig: Rig) -> None:
    """Once the gateway drained a non-streamed answer to its end for a client long gone
    (here: forever); `CancelOnDisconnect` (gateway/api/middleware.py) stops it."""
    request_id = "gives-up-waiting"
    body = {"model": "endless", "messages": [{"role": "user", "content": "hi"}]}
    with rig.client(timeout=1.0) as http, pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json=body, headers={"X-Request-Id": request_id})
    upstream_cancelled(rig, request_id, "the upstream's answer went on after the client gave up")


# -- Redis goes away ----------------------------------------------------------------------------


def test_redis_killed_and_restarted_while_serving(rig: Rig) -> None:
    """SIGKILL with a stream in flight; requests and learning go on; nothing learned is lost."""
    before = dict(rig.learned)
    failures: list[tuple[str, int, str]] = []
    statuses: list[str] = []
    with rig.client() as http:
        body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        events: list[str] = []
        with http.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line.removeprefix("data: "))
                    if len(events) == 2:
                        rig.redis.kill()
        assert events[-1] == "[DONE]"
        assert not any('"error"' in e for e in events)
        assert "".join(events).count("tick") == 40
        for i in range(30):
            if i == 20:
                rig.redis.start()
            calls = [
                ("ok", {"model": "ok", "messages": [{"role": "user", "content": f"hi {i}"}]}),
                ("ok-stream", {"model": "ok", "stream": True,
                               "messages": [{"role": "user", "content": f"hi {i}"}]}),
                ("auto", {"messages": [{"role": "user", "content": f"what is {i}% of 80"}]}),
            ]  # fmt: skip
            for what, chat in calls:
                response = http.post("/v1/chat/completions", json=chat)
                if response.status_code != 200 or '"error"' in response.text:
                    failures.append((what, response.status_code, response.text[:300]))
            learn(rig, http, f"learned during the outage {i}")
            if i < 20:
                statuses.append(http.get("/readyz").json()["status"])
        assert failures == []
        assert "degraded" in statuses
        wait_until(
            lambda: http.get("/readyz").json() == {"status": "ready"}, SETTLE_S,
            "the gateway did not report ready after Redis came back",
        )  # fmt: skip
        assert before.items() <= listed(http).items()
    wait_until(
        lambda: set(rig.learned.values()) <= stored_texts(rig.redis.url), SETTLE_S,
        "exemplars learned before or during the outage are missing from Redis",
    )  # fmt: skip
