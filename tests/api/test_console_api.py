"""What the operator console uses, through the HTTP API: its files at /console, routing
explained (`/v1/route` with `explain`), expert activity, the request log, cache hit
counts, configured examples, and evaluation (`POST /admin/eval`)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from experts.registry import ExpertSet
from gateway.api.app import build_app
from gateway.api.console import FILES
from gateway.config import Config, parse_config
from gateway.eval_jobs import Evaluations
from gateway.evaluation import EvalResult, Outcome
from gateway.service import Gateway
from tests.api.conftest import Served, local_memory, wait_ready
from tests.fakes import KeywordEmbedder, ScriptedExpert
from tests.support.asgi import serve
from tests.support.keys import auth_block, entry, token

CONFIG = (
    auth_block(entry("ops", admin=True), entry("reader", tenant="ops"), entry("rival", admin=True))
    + """router: {threshold: 0.45, margin: 0.04, use_descriptions: false}
experts:
  - {name: calculator, kind: tool, tool: calculator, ask: do arithmetic,
     description: arithmetic, examples: [compute, percent, compute percent]}
  - {name: units, kind: tool, tool: units, ask: convert units,
     description: measurements, examples: [convert, miles]}
"""
)
KEYWORDS = ["compute", "percent", "convert", "miles", "grams", "weather"]
# A name, never fetched.
SVG_NAMESPACE = "http://www.w3.org/2000/svg"
CONSOLE_DIR = Path(__file__).resolve().parents[2] / "gateway" / "console"


def http(name: str | None, url: str) -> httpx.Client:
    headers = {"authorization": f"Bearer {token(name)}"} if name else {}
    return httpx.Client(base_url=url, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    config = parse_config(CONFIG, "console.yaml", {})
    experts = [ScriptedExpert("calculator", ["12"]), ScriptedExpert("units", ["3 km"])]
    gateway = Gateway(config, KeywordEmbedder(KEYWORDS), ExpertSet(experts), local_memory())
    with serve(build_app(gateway, 1 << 20)) as base:
        wait_ready(base)
        yield base


def chat(client: httpx.Client, text: str, **extra: object) -> httpx.Response:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}
    return client.post("/v1/chat/completions", json=body)


# -- the console's files -------------------------------------------------------------


def test_the_console_is_served_from_the_package_without_a_key(url: str) -> None:
    with http(None, url) as anonymous:
        moved = anonymous.get("/console", follow_redirects=False)
        assert moved.status_code == 308
        assert moved.headers["location"] == "/console/"
        page = anonymous.get("/console/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<title>taskgate console</title>" in page.text


def test_every_file_the_page_loads_is_served_and_nothing_comes_from_elsewhere(url: str) -> None:
    files = sorted(p.name for p in CONSOLE_DIR.iterdir())
    assert files == sorted(FILES)
    references: set[str] = set()
    for name in files:
        text = (CONSOLE_DIR / name).read_text()
        urls = set(re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"']*", text, re.I))
        assert urls <= {SVG_NAMESPACE}, f"{name} refers to another site: {urls}"
        references |= set(re.findall(r'(?:src|href)="([^"#:]+)"', text))
        references |= set(re.findall(r'from "\./([^"]+)"', text))
    with http(None, url) as anonymous:
        for ref in references:
            answer = anonymous.get(f"/console/{ref.removeprefix('./')}")
            assert answer.status_code == 200, ref
            served_as = answer.headers["content-type"].split(";")[0]
            assert served_as == FILES[Path(ref).name].split(";")[0]


def test_unknown_console_files_are_a_json_404(url: str) -> None:
    with http(None, url) as anonymous:
        for path in ("/console/nope.js", "/console/..%2Fconfig.py", "/console/app.py"):
            answer = anonymous.get(path)
            assert answer.status_code == 404, path
            assert answer.json()["error"]["code"] in {"not_found", "http_404"}


def test_the_console_files_are_no_api_operations(url: str) -> None:
    with http(None, url) as anonymous:
        paths = anonymous.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith("/console")]
    assert {"/admin/requests", "/admin/cache", "/admin/eval"} <= set(paths)


# -- routing explained ---------------------------------------------------------------


def test_route_explain_gives_the_policy_and_the_nearest_exemplars(url: str) -> None:
    with http("ops", url) as ops:
        plain = ops.post("/v1/route", json={"input": "compute percent"}).json()["route"]
        answer = ops.post("/v1/route", json={"input": "compute percent", "explain": True})
    assert answer.status_code == 200
    route = answer.json()["route"]
    assert "explain" not in plain
    assert {k: v for k, v in route.items() if k != "explain"} == plain
    explain = route["explain"]
    assert (explain["threshold"], explain["margin"]) == (0.45, 0.04)
    assert (explain["scale"], explain["aggregate"]) == ("similarity", "max")
    first = explain["exemplars"][0]
    assert first == {"expert": "calculator", "text": "compute percent", "similarity": 1.0,
                     "source": "config", "id": None}  # fmt: skip
    sims = [e["similarity"] for e in explain["exemplars"]]
    assert sims == sorted(sims, reverse=True)
    assert {e["expert"] for e in explain["exemplars"]} == {"calculator"}


def test_route_explain_counts_the_tenants_learned_exemplars(url: str) -> None:
    with http("ops", url) as ops, http("rival", url) as rival:
        added = ops.post("/v1/exemplars", json={"expert": "units", "text": "weather grams"})
        assert added.status_code == 201
        try:
            body = {"input": "weather grams", "explain": True}
            route = ops.post("/v1/route", json=body).json()["route"]
            theirs = rival.post("/v1/route", json=body).json()["route"]
        finally:
            ops.delete(f"/v1/exemplars/{added.json()['id']}")
    assert (route["action"], route["expert"]) == ("dispatch", "units")
    assert route["explain"]["exemplars"][0] == {
        "expert": "units", "text": "weather grams", "similarity": 1.0, "source": "api",
        "id": added.json()["id"],
    }  # fmt: skip
    assert theirs["action"] == "clarify"
    assert all(e["source"] == "config" for e in theirs["explain"]["exemplars"])
    # A clarification explains the experts it offers.
    assert {e["expert"] for e in theirs["explain"]["exemplars"]} <= set(theirs["options"])


def test_route_explain_needs_an_admin_key(url: str) -> None:
    with http("reader", url) as reader:
        refused = reader.post("/v1/route", json={"input": "compute", "explain": True})
        plain = reader.post("/v1/route", json={"input": "compute", "explain": False})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "admin_key_required"
    assert plain.status_code == 200


def test_route_explain_rejects_a_non_boolean(url: str) -> None:
    with http("ops", url) as ops:
        answer = ops.post("/v1/route", json={"input": "compute", "explain": "very"})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "explain"


# -- activity: experts, the request log, the cache -------------------------------------


def test_admin_experts_reports_requests_and_recent_latency(url: str) -> None:
    with http("ops", url) as ops:
        before = {e["name"]: e for e in ops.get("/admin/experts").json()["data"]}
        assert chat(ops, "convert miles").status_code == 200
        after = {e["name"]: e for e in ops.get("/admin/experts").json()["data"]}
    assert after["units"]["requests"] == before["units"]["requests"] + 1
    assert after["calculator"]["requests"] == before["calculator"]["requests"]
    latency = after["units"]["latency_ms"]
    assert latency["p50"] is not None and latency["p50"] >= 0
    assert latency["p95"] >= latency["p50"]
    assert after["units"]["examples"] == 2


def test_the_request_log_is_the_tenants_newest_first(url: str) -> None:
    with http("ops", url) as ops, http("rival", url) as rival:
        chat(ops, "compute percent please")
        chat(ops, "weather")  # a clarification is logged too
        mine = ops.get("/admin/requests", params={"limit": 2}).json()["data"]
        theirs = rival.get("/admin/requests").json()["data"]
    assert [(r["text"], r["action"], r["expert"]) for r in mine] == [
        ("weather", "clarify", None),
        ("compute percent please", "dispatch", "calculator"),
    ]
    assert mine[0]["created"] >= mine[1]["created"]
    assert mine[1]["id"].startswith("chatcmpl-")
    assert all(r["text"] not in {"weather", "compute percent please"} for r in theirs)


def test_the_request_log_is_for_admins_and_bounded(url: str) -> None:
    with http("reader", url) as reader, http("ops", url) as ops:
        assert reader.get("/admin/requests").status_code == 403
        for limit in (0, 201, "x"):
            refused = ops.get("/admin/requests", params={"limit": limit})
            assert refused.status_code == 400
            assert refused.json()["error"]["param"] == "query.limit"


def test_cache_hits_are_counted(url: str) -> None:
    with http("ops", url) as ops:
        before = ops.get("/admin/cache").json()
        first = chat(ops, "convert miles to grams", temperature=0)
        again = chat(ops, "convert miles to grams", temperature=0)
        after = ops.get("/admin/cache").json()
        assert http("reader", url).get("/admin/cache").status_code == 403
    assert first.json()["route"]["cached"] is None
    assert again.json()["route"]["cached"] == "exact"
    assert after["lookups"] == before["lookups"] + 2
    assert after["hits"]["exact"] == before["hits"]["exact"] + 1
    assert after["hits"]["semantic"] == before["hits"]["semantic"]
    total = after["hits"]["exact"] + after["hits"]["semantic"]
    assert after["hit_rate"] == round(total / after["lookups"], 4)


# -- configured examples ---------------------------------------------------------------


def test_config_examples_are_listed_as_source_config(url: str) -> None:
    with http("ops", url) as ops:
        listed = ops.get("/v1/exemplars", params={"source": "config"}).json()["data"]
        units = ops.get("/v1/exemplars", params={"source": "config", "expert": "units"}).json()
        page = ops.get("/v1/exemplars", params={"source": "config", "limit": 2, "offset": 1})
        refused = ops.delete(f"/v1/exemplars/{listed[0]['id']}")
    assert [(e["expert"], e["text"]) for e in listed] == [
        ("calculator", "compute"), ("calculator", "percent"), ("calculator", "compute percent"),
        ("units", "convert"), ("units", "miles"),
    ]  # fmt: skip
    assert all(e["source"] == "config" and e["tenant"] is None for e in listed)
    assert [e["text"] for e in units["data"]] == ["convert", "miles"]
    assert [e["text"] for e in page.json()["data"]] == ["percent", "compute percent"]
    assert refused.status_code == 404


def test_config_examples_need_an_admin_key(url: str) -> None:
    with http("reader", url) as reader:
        assert reader.get("/v1/exemplars", params={"source": "config"}).status_code == 403
        assert reader.get("/v1/exemplars", params={"source": "api"}).status_code == 200


# -- evaluation ------------------------------------------------------------------------

TEMPLATES = {
    "weather": ["will it rain in {}", "forecast for {}", "is it sunny in {}", "how cold is {}"],
    "flights": ["book a flight to {}", "plane ticket to {}", "next flight to {}",
                "cheapest flights to {}"],
}  # fmt: skip
PLACES = ["paris", "berlin", "tokyo", "lima", "oslo", "cairo"]
OUT_OF_SCOPE = ["write a poem about cats", "who painted the mona lisa", "how do vaccines work",
                "what is my credit score"]  # fmt: skip


def jsonl(rows: Sequence[tuple[str, str]]) -> str:
    return "".join(json.dumps({"text": text, "label": label}) + "\n" for text, label in rows)


def dataset() -> tuple[str, str]:
    rows = [(t.format(p), label) for label, ts in TEMPLATES.items() for t in ts for p in PLACES]
    train = [row for i, row in enumerate(rows) if i % 3] + [(OUT_OF_SCOPE[0], "oos")]
    test = [row for i, row in enumerate(rows) if not i % 3] + [(t, "oos") for t in OUT_OF_SCOPE[1:]]
    return jsonl(train), jsonl(test)


def test_eval_runs_taskgate_evals_evaluation(url: str) -> None:
    train, test = dataset()
    with http("ops", url) as ops:
        answer = ops.post("/admin/eval", json={"train": train, "test": test})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    metrics = result["metrics"]
    assert metrics["n_test"] == 19 and metrics["n_experts"] == 2
    assert 0.0 <= metrics["in_scope_accuracy"] <= 1.0
    assert metrics["oos_recall"] is not None
    assert result["threshold"] == metrics["threshold"]
    curve = result["curve"]
    assert len(curve["threshold"]) == len(curve["in_scope_accuracy"]) == 101
    assert len(curve["oos_recall"]) == 101
    for pair in result["confusions"]:
        assert set(pair) == {"label", "routed", "count"} and pair["count"] >= 1
    assert result["summary"].startswith(("no head", "head:"))


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ({"train": "not json\n", "test": "{}"}, "train", "train:1: invalid JSON"),
        ({"train": jsonl([("a", "x"), ("b", "y")]), "test": '{"text": 1}'}, "test",
         'expected {"text": str, "label": str}'),
        ({"train": jsonl([("a", "x")]), "test": jsonl([("a", "x")])}, "train",
         "at least two labels"),
        ({"train": "\n\n", "test": jsonl([("a", "x")])}, "train", "train: no rows"),
    ],
)  # fmt: skip
def test_eval_names_a_bad_dataset(url: str, body: dict[str, str], param: str, needle: str) -> None:
    with http("ops", url) as ops:
        answer = ops.post("/admin/eval", json=body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_dataset", param)
    assert needle in error["message"]


def test_eval_needs_an_admin_key_and_both_files(url: str) -> None:
    with http("reader", url) as reader, http("ops", url) as ops:
        assert reader.post("/admin/eval", json={"train": "x", "test": "y"}).status_code == 403
        missing = ops.post("/admin/eval", json={"train": "x"})
        extra = ops.post("/admin/eval", json={"train": "x", "test": "y", "plot": True})
    assert (missing.status_code, missing.json()["error"]["param"]) == (400, "test")
    assert extra.status_code == 400


def test_eval_bounds_the_rows_and_runs_one_at_a_time() -> None:
    started, release = threading.Event(), threading.Event()

    def blocking(config: Config, *rows: object) -> EvalResult:
        started.set()
        release.wait(30)
        outcome = Outcome("x", "x", "dispatch", "x", 0.9, 0.1, 1.0)
        return EvalResult({"oos_recall": None}, [outcome], None, 0.5, 0.1)

    config = parse_config(CONFIG, "console.yaml", {})
    gateway = Gateway(config, KeywordEmbedder(KEYWORDS),
                      ExpertSet([ScriptedExpert("calculator"), ScriptedExpert("units")]),
                      local_memory())  # fmt: skip
    app = build_app(gateway, 1 << 20)
    app.state.evaluations = Evaluations(None, max_rows=3, run=blocking)
    rows = jsonl([("a", "x"), ("b", "y")])
    with serve(app) as base, http("ops", base) as ops:
        wait_ready(base)
        too_many = ops.post("/admin/eval", json={"train": jsonl([("a", "x")] * 4), "test": rows})
        assert too_many.status_code == 400
        assert "at most 3" in too_many.json()["error"]["message"]
        first: list[httpx.Response] = []
        worker = threading.Thread(
            target=lambda: first.append(ops.post("/admin/eval", json={"train": rows, "test": rows}))
        )
        worker.start()
        assert started.wait(10)
        busy = ops.post("/admin/eval", json={"train": rows, "test": rows})
        release.set()
        worker.join(30)
    assert busy.status_code == 429
    assert busy.json()["error"]["code"] == "evaluation_running"
    assert first[0].status_code == 200
    assert first[0].json()["curve"]["oos_recall"] is None


def test_with_auth_none_the_console_needs_no_key(served: Served) -> None:
    explained = served.http.post("/v1/route", json={"input": "compute", "explain": True})
    assert explained.status_code == 200
    assert explained.json()["route"]["explain"]["exemplars"][0]["text"] == "compute"
    assert served.http.get("/admin/requests").status_code == 200
