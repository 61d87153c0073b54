"""The HTTP API through the real `openai` client, against the app served by uvicorn."""

from __future__ import annotations

import json

import openai
import pytest

from tests.api.conftest import AMBIGUOUS, Served


def route_of(obj: object) -> dict[str, object]:
    extra = getattr(obj, "model_extra", None) or {}
    route = extra["route"]
    assert isinstance(route, dict)
    return route


def test_non_streamed_answer_carries_route_and_usage(served: Served) -> None:
    raw = served.client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "compute percent"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "12"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "calculator"
    assert completion.usage is not None and completion.usage.completion_tokens == 1
    route = route_of(completion)
    assert route["action"] == "dispatch"
    assert route["expert"] == "calculator"
    assert [c["expert"] for c in route["candidates"]][:1] == ["calculator"]  # type: ignore[index, union-attr]
    assert raw.headers["x-route-action"] == "dispatch"
    assert raw.headers["x-route-expert"] == "calculator"
    assert float(raw.headers["x-route-score"]) == pytest.approx(route["score"], abs=1e-4)
    assert raw.headers["x-request-id"]


def test_streamed_answer_arrives_in_pieces_with_route_and_usage(served: Served) -> None:
    stream = served.client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "tell me a joke"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert route_of(chunks[0])["expert"] == "general"
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert pieces == ["Why did", " the chicken", " cross?"]
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 6


def test_stream_without_include_usage_has_no_usage_chunk(served: Served) -> None:
    chunks = list(
        served.client.chat.completions.create(
            model="units", messages=[{"role": "user", "content": "anything"}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "8.047 km"


def test_explicit_expert_skips_routing(served: Served) -> None:
    completion = served.client.chat.completions.create(
        model="units", messages=[{"role": "user", "content": "tell me a joke"}]
    )
    assert completion.choices[0].message.content == "8.047 km"
    route = route_of(completion)
    assert (route["action"], route["expert"], route["reason"]) == ("dispatch", "units", "explicit")


def test_a_fixed_route_embeds_only_what_the_cache_needs(served: Served) -> None:
    def ask(text: str, cache_control: str | None = None) -> None:
        headers = {"Cache-Control": cache_control} if cache_control else None
        served.client.chat.completions.create(
            model="calculator",
            messages=[{"role": "user", "content": text}],
            temperature=0,
            extra_headers=headers,
        )

    before = len(served.embedder.calls)
    ask("compute seven eights", "no-cache, no-store")
    assert len(served.embedder.calls) == before  # no routing, no cache: no embedding
    ask("compute six nines")
    assert served.embedder.calls[before:] == [["compute six nines"]]  # once, to store it


def test_a_failing_embedder_skips_caching_and_makes_routing_a_503(served: Served) -> None:
    served.embedder.failing = True
    try:
        # A fixed route needs the embedder only for the semantic cache: it still answers.
        reply = served.client.chat.completions.create(
            model="calculator", messages=[{"role": "user", "content": "compute five fours"}]
        )
        routed = served.http.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": "compute 2+2"}]},
        )
    finally:
        served.embedder.failing = False
    assert reply.choices[0].message.content == "12"
    assert reply.choices[0].finish_reason == "stop"
    assert routed.status_code == 503
    error = routed.json()["error"]
    assert error["code"] == "routing_unavailable" and "name an expert" in error["message"]


def test_models_lists_auto_and_every_expert(served: Served) -> None:
    ids = [model.id for model in served.client.models.list()]
    assert ids[0] == "auto"
    assert set(ids[1:]) == set(served.experts)


def test_route_endpoint_decides_without_calling_an_expert(served: Served) -> None:
    before = len(served.experts["units"].requests)
    response = served.http.post("/v1/route", json={"input": "convert miles"})
    assert response.status_code == 200
    route = response.json()["route"]
    assert (route["action"], route["expert"]) == ("dispatch", "units")
    assert response.headers["x-route-expert"] == "units"
    assert len(served.experts["units"].requests) == before
    messages = {"messages": [{"role": "user", "content": "percent miles"}]}
    clarify = served.http.post("/v1/route", json=messages).json()["route"]
    assert clarify["action"] == "clarify"
    assert clarify["options"] == ["calculator", "units"]


def test_clarification_then_answer_dispatches_the_original_request(served: Served) -> None:
    messages: list[dict[str, str]] = [{"role": "user", "content": AMBIGUOUS}]
    asked = served.client.chat.completions.create(model="auto", messages=messages)  # type: ignore[arg-type]
    question = asked.choices[0].message.content
    assert question == "Do you want me to do arithmetic (calculator), or to convert units (units)?"
    assert route_of(asked)["action"] == "clarify"
    assert asked.model == "auto"
    messages += [{"role": "assistant", "content": question}, {"role": "user", "content": "units"}]
    answered = served.client.chat.completions.create(model="auto", messages=messages)  # type: ignore[arg-type]
    assert answered.choices[0].message.content == "8.047 km"
    route = route_of(answered)
    assert (route["action"], route["expert"], route["reason"]) == (
        "dispatch", "units", "clarified_by_name",
    )  # fmt: skip
    sent = served.experts["units"].requests[-1]
    assert [m.content for m in sent.messages] == [AMBIGUOUS]


def test_streamed_clarification_is_one_question(served: Served) -> None:
    # Not AMBIGUOUS: the clarification test above taught the gateway where that one goes.
    chunks = list(
        served.client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "percent miles"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Do you want me to")
    assert route_of(chunks[0])["action"] == "clarify"


def test_sampling_and_extra_fields_reach_the_expert(served: Served) -> None:
    served.client.chat.completions.create(
        model="calculator",
        messages=[{"role": "system", "content": "terse"}, {"role": "user", "content": "x"}],
        temperature=0.5, top_p=0.9, max_tokens=7, stop="END", seed=3,
        extra_body={"top_k": 5, "response_format": {"type": "text"}},
    )  # fmt: skip
    request = served.experts["calculator"].requests[-1]
    assert request.sampling.temperature == 0.5
    assert request.sampling.top_p == 0.9
    assert request.sampling.max_tokens == 7
    assert request.sampling.stop == ("END",)
    assert request.sampling.seed == 3
    assert request.sampling.top_k == 5
    assert request.extra == {"response_format": {"type": "text"}}
    assert [m.role for m in request.messages] == ["system", "user"]


def test_declined_expert_falls_back(served: Served) -> None:
    completion = served.client.chat.completions.create(
        model="picky", messages=[{"role": "user", "content": "hello"}]
    )
    assert completion.choices[0].message.content == "Why did the chicken cross?"
    route = route_of(completion)
    assert route["expert"] == "general"
    assert route["reason"] == "explicit+fallback_from_picky"


# -- errors ------------------------------------------------------------------------------


def error_of(response: object) -> dict[str, object]:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error  # type: ignore[no-any-return]


def test_malformed_json_is_a_400(served: Served) -> None:
    response = served.http.post(
        "/v1/chat/completions",
        content=b'{"messages": [',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert error_of(response)["message"] == "the request body is not valid JSON"


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"messages": []}, "messages", "at least 1"),
        ({}, "messages", "field required"),
        ({"messages": "hi"}, "messages", "valid list"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content", ""),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role", ""),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature", ""),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens", ""),
        ({"messages": [{"role": "user", "content": "x"}], "n": 0}, "n", ""),
        ({"messages": [{"role": "user", "content": "x"}], "n": 9}, "n", "at most 8"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages", "user message"),
        ({"messages": [{"role": "user", "content": "  "}]}, "messages", "user message"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]},
         "messages.0.content", "needs its text"),
    ],
)  # fmt: skip
def test_bad_requests_get_a_400_that_says_what(
    served: Served, body: dict[str, object], param: str, fragment: str
) -> None:
    response = served.http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in str(error["message"])


def test_unknown_expert_is_a_404_naming_the_choices(served: Served) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        served.client.chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "x"}]
        )
    assert "unknown model 'nope'" in str(caught.value)
    assert "calculator" in str(caught.value)


def test_oversized_body_is_a_413(served: Served) -> None:
    big = {"messages": [{"role": "user", "content": "x" * 5000}]}
    response = served.http.post("/v1/chat/completions", json=big)
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"
    chunked = served.http.post(
        "/v1/chat/completions",
        content=iter([json.dumps(big).encode()]),
        headers={"content-type": "application/json"},
    )
    assert chunked.status_code == 413


def test_failing_expert_is_a_502_naming_it(served: Served) -> None:
    response = served.http.post(
        "/v1/chat/completions",
        json={"model": "broken", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 502
    error = error_of(response)
    assert "expert 'broken' failed" in str(error["message"])


def test_slow_expert_is_a_504_naming_it(served: Served) -> None:
    response = served.http.post(
        "/v1/chat/completions",
        json={"model": "slow", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 504
    assert "expert 'slow' timed out" in str(error_of(response)["message"])
    assert served.experts["slow"].closed_streams >= 1


def test_declined_without_fallback_is_a_422(served: Served) -> None:
    response = served.http.post(
        "/v1/chat/completions",
        json={"model": "lonely", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 422
    assert "cannot answer" in str(error_of(response)["message"])


def test_upstream_rejection_is_a_400_naming_the_expert(served: Served) -> None:
    response = served.http.post(
        "/v1/chat/completions",
        json={"model": "strict", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 400
    assert (
        error_of(response)["message"] == "expert 'strict' rejected the request: max_tokens too big"
    )


def test_failure_mid_stream_becomes_one_error_event_then_done(served: Served) -> None:
    with served.http.stream(
        "POST", "/v1/chat/completions",
        json={"model": "midfail", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    ) as response:  # fmt: skip
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2].removeprefix("data: "))["error"]
    assert "expert 'midfail' failed" in error["message"]
    contents = [json.loads(e[6:]) for e in events[:-2]]
    assert any(c["choices"][0]["delta"].get("content") == "part one" for c in contents)
    with pytest.raises(openai.APIError, match="midfail"):
        list(served.client.chat.completions.create(
            model="midfail", messages=[{"role": "user", "content": "x"}], stream=True
        ))  # fmt: skip


def test_unknown_path_gets_an_openai_error_body(served: Served) -> None:
    response = served.http.get("/v1/nothing")
    assert response.status_code == 404
    assert error_of(response)["type"] == "invalid_request_error"


def test_health_endpoints(served: Served) -> None:
    assert served.http.get("/healthz").json()["status"] == "ok"
    assert served.http.get("/readyz").json() == {"status": "ready"}
