"""Keys, rights, budgets and caps at the HTTP edge, and tenants kept apart everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from experts.registry import ExpertSet
from gateway.access.keys import NewKey, new_key
from gateway.access.keystore import write_key_file
from gateway.api.app import build_app
from gateway.config import parse_config
from gateway.service import Gateway
from tests.api.conftest import local_memory, wait_ready
from tests.fakes import KeywordEmbedder, ScriptedExpert
from tests.support.asgi import serve

CONFIG = """
server: {{max_messages: 4, max_message_chars: 200, max_tokens: 100}}
auth: {{keys_file: "{keys}", recheck_s: 0}}
router: {{threshold: 0.45, margin: 0.04, use_descriptions: false}}
experts:
  - {{name: calculator, kind: tool, tool: calculator, ask: do arithmetic,
     description: arithmetic, examples: [compute, percent]}}
  - {{name: units, kind: tool, tool: units, ask: convert units,
     description: measurements, examples: [convert, miles]}}
"""
KEYWORDS = ["compute", "percent", "convert", "miles", "arithmetic", "measurements", "feet"]
ENDPOINTS = [
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "compute"}]}),
    ("POST", "/v1/route", {"input": "compute"}),
    ("GET", "/v1/models", None),
    ("GET", "/v1/exemplars", None),
    ("POST", "/v1/exemplars", {"expert": "units", "text": "feet"}),
    ("DELETE", "/v1/exemplars/ex-1", None),
    ("POST", "/v1/feedback", {"id": "chatcmpl-1", "rating": 1}),
    ("POST", "/admin/reload", None),
    ("GET", "/admin/experts", None),
]
ADMIN_ONLY = {"/admin/reload", "/admin/experts", "/v1/exemplars:POST", "/v1/exemplars/ex-1:DELETE"}


class App:
    def __init__(self, url: str, keys_file: Path, keys: dict[str, NewKey]) -> None:
        self.url, self.keys_file, self.keys = url, keys_file, keys
        self.calculator = ScriptedExpert("calculator", ["12"])

    def http(self, name: str | None) -> httpx.Client:
        headers = {} if name is None else {"authorization": f"Bearer {self.keys[name].token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    keys_file = tmp_path_factory.mktemp("auth") / "keys.yaml"
    keys = {
        "acme": new_key("acme", admin=True),
        "globex": new_key("globex", admin=True),
        "reader": new_key("acme"),
        "doomed": new_key("acme", admin=True),
        "limited": new_key("lim", rpm=3),
        "thrifty": new_key("thr", tpm=4),
    }
    write_key_file(keys_file, [made.record for made in keys.values()])
    config = parse_config(CONFIG.format(keys=keys_file), "access.yaml", {})
    experts = {"calculator": ScriptedExpert("calculator", ["12"]),
               "units": ScriptedExpert("units", ["converted"])}  # fmt: skip
    gateway = Gateway(
        config, KeywordEmbedder(KEYWORDS), ExpertSet(list(experts.values())), local_memory()
    )
    with serve(build_app(gateway, config.server.max_body_bytes)) as url:
        wait_ready(url)
        served = App(url, keys_file, keys)
        served.calculator = experts["calculator"]
        yield served


def call(client: httpx.Client, method: str, path: str, body: object) -> httpx.Response:
    return client.request(method, path, json=body)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "bearer tg_", "Basic dXNlcjpwYXNz", "Bearer sk-not-ours",
     "Bearer tg_0123456789ab_" + "0" * 48],
)  # fmt: skip
def test_every_endpoint_refuses_a_missing_or_wrong_key(app: App, authorization: str | None) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    with httpx.Client(base_url=app.url, headers=headers, timeout=10) as client:
        for method, path, body in ENDPOINTS:
            response = call(client, method, path, body)
            assert response.status_code == 401, (method, path)
            assert response.json()["error"]["type"] == "authentication_error"


def test_a_revoked_key_stops_working(app: App) -> None:
    with app.http("doomed") as client:
        assert client.get("/v1/exemplars").status_code == 200
        kept = [made.record for name, made in app.keys.items() if name != "doomed"]
        write_key_file(app.keys_file, kept)
        refused = client.get("/v1/exemplars")
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]["message"]


def test_admin_endpoints_and_exemplar_writes_need_an_admin_key(app: App) -> None:
    with app.http("reader") as reader:
        for method, path, body in ENDPOINTS:
            response = call(reader, method, path, body)
            if f"{path}:{method}" in ADMIN_ONLY or path in ADMIN_ONLY:
                assert response.status_code == 403, (method, path)
                assert response.json()["error"]["type"] == "permission_error"
            else:
                assert response.status_code in (200, 404), (method, path)


def test_a_key_over_its_request_budget_gets_429_with_retry_after(app: App) -> None:
    with app.http("limited") as client:
        statuses = [client.get("/v1/models").status_code for _ in range(3)]
        refused = client.get("/v1/models")
    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    with app.http("reader") as other:  # budgets are per key
        assert other.get("/v1/models").status_code == 200


def test_a_key_over_its_token_budget_gets_429(app: App) -> None:
    chat = {"model": "calculator", "messages": [{"role": "user", "content": "compute 6 + 6"}]}
    with app.http("thrifty") as client:
        first = client.post("/v1/chat/completions", json=chat)
        second = client.post("/v1/chat/completions", json=chat)
        still = client.get("/v1/models")  # tokens bind only what spends them
    assert first.status_code == 200
    assert second.status_code == 429
    assert "tokens" in second.json()["error"]["message"]
    assert "retry-after" in second.headers
    assert still.status_code == 200


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": [{"role": "user", "content": "compute"}] * 5}, "messages",
         "too_many_messages"),
        ({"messages": [{"role": "user", "content": "x" * 201}]}, "messages.0.content",
         "message_too_long"),
        ({"messages": [{"role": "user", "content": "compute"}], "max_tokens": 101},
         "max_tokens", "max_tokens_too_large"),
    ],
)  # fmt: skip
def test_caps_are_clear_400s(app: App, body: dict[str, object], param: str, code: str) -> None:
    with app.http("acme") as client:
        response = client.post("/v1/chat/completions", json=body)
        routed = client.post("/v1/route", json={"messages": body["messages"]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code)
    if param != "max_tokens":
        assert routed.status_code == 400


def test_another_tenants_exemplar_is_invisible_everywhere(app: App) -> None:
    with app.http("acme") as acme, app.http("globex") as globex:
        made = acme.post("/v1/exemplars", json={"expert": "units", "text": "feet feet"})
        assert made.status_code == 201
        ident = made.json()["id"]
        assert acme.post("/v1/route", json={"input": "feet feet"}).json()["route"]["expert"] == (
            "units"
        )
        assert globex.post("/v1/route", json={"input": "feet feet"}).json()["route"]["action"] == (
            "clarify"
        )
        chat = {"messages": [{"role": "user", "content": "feet feet"}]}
        assert globex.post("/v1/chat/completions", json=chat).json()["route"]["action"] == (
            "clarify"
        )
        assert ident not in {e["id"] for e in globex.get("/v1/exemplars").json()["data"]}
        assert globex.get("/v1/exemplars", params={"expert": "units"}).json()["data"] == []
        assert globex.delete(f"/v1/exemplars/{ident}").status_code == 404
        assert ident in {e["id"] for e in acme.get("/v1/exemplars").json()["data"]}
        assert acme.delete(f"/v1/exemplars/{ident}").status_code == 204


def test_another_tenants_cache_entry_and_answer_are_invisible(app: App) -> None:
    chat = {
        "model": "calculator",
        "messages": [{"role": "user", "content": "compute 7 * 7"}],
        "temperature": 0,
    }
    with app.http("acme") as acme, app.http("globex") as globex:
        calls = len(app.calculator.requests)
        first = acme.post("/v1/chat/completions", json=chat).json()
        assert acme.post("/v1/chat/completions", json=chat).json()["route"]["cached"] == "exact"
        theirs = globex.post("/v1/chat/completions", json=chat).json()
        assert theirs["route"].get("cached") is None
        assert len(app.calculator.requests) == calls + 2
        rating = {"id": first["id"], "rating": 1}
        assert globex.post("/v1/feedback", json=rating).status_code == 404
        assert acme.post("/v1/feedback", json=rating).status_code == 200


def test_another_tenants_clarification_is_invisible(app: App) -> None:
    asked = [{"role": "user", "content": "compute convert"}]
    with app.http("acme") as acme, app.http("globex") as globex:
        question = acme.post("/v1/chat/completions", json={"messages": asked}).json()
        assert question["route"]["action"] == "clarify"
        said = question["choices"][0]["message"]["content"]
        reply = [
            *asked,
            {"role": "assistant", "content": said},
            {"role": "user", "content": "units"},
        ]
        # globex sends the same conversation: acme's pending question is not theirs.
        theirs = globex.post("/v1/chat/completions", json={"messages": reply}).json()
        assert not theirs["route"]["reason"].startswith("clarified")
        learned = globex.get("/v1/exemplars", params={"source": "clarification"}).json()
        assert learned["data"] == []
        # acme's answer still resolves acme's question, and teaches acme only.
        mine = acme.post("/v1/chat/completions", json={"messages": reply}).json()
        assert (mine["route"]["expert"], mine["route"]["reason"]) == ("units", "clarified_by_name")
        acme_learned = acme.get("/v1/exemplars", params={"source": "clarification"}).json()
        assert [e["text"] for e in acme_learned["data"]] == ["compute convert"]


def test_auth_none_says_so_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config(
        "auth: none\nexperts:\n  - {name: c, kind: tool, tool: calculator, description: d}\n",
        "open.yaml",
        {},
    )
    gateway = Gateway(config, KeywordEmbedder(KEYWORDS), ExpertSet([ScriptedExpert("c", ["1"])]),
                      local_memory())  # fmt: skip
    with caplog.at_level("WARNING"), serve(build_app(gateway, 4096)) as url:
        wait_ready(url)
        assert httpx.get(f"{url}/v1/exemplars").status_code == 200  # no key needed
    assert any("authentication is off" in r.getMessage() for r in caplog.records)
