"""The embedded default, served by `taskgate serve` as README's first command runs it.

Each README example is checked through the official `openai` client, as printed there.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support.gateway import gateway_process

AMBIGUOUS = "how much is 12 kg times 4"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with gateway_process() as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def ask(client: openai.OpenAI, *turns: str) -> openai.types.chat.ChatCompletion:
    roles = ["user", "assistant"]
    messages = [{"role": roles[i % 2], "content": text} for i, text in enumerate(turns)]
    return client.chat.completions.create(model="auto", messages=messages)  # type: ignore[arg-type]


def test_percentages_go_to_the_calculator(client: openai.OpenAI) -> None:
    answer = ask(client, "what is 15% of 80")
    assert answer.model == "calculator"
    assert answer.choices[0].message.content == "15% of 80 = 12"
    assert answer.model_extra is not None
    assert answer.model_extra["route"]["action"] == "dispatch"


def test_conversions_go_to_units(client: openai.OpenAI) -> None:
    answer = ask(client, "convert 5 miles to km")
    assert answer.model == "units"
    assert "8.047 km" in (answer.choices[0].message.content or "")


def test_a_joke_comes_from_the_local_model_streamed_and_not(client: openai.OpenAI) -> None:
    answer = ask(client, "tell me a short joke")
    assert answer.model == "general"
    text = answer.choices[0].message.content or ""
    assert len(text.split()) >= 3
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "tell me a short joke"}], stream=True
    )
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 1
    # Greedy by default: the stream says exactly what the non-streamed answer said.
    assert "".join(pieces) == text


def test_ambiguous_request_asks_and_the_answer_dispatches(client: openai.OpenAI) -> None:
    asked = ask(client, AMBIGUOUS)
    question = asked.choices[0].message.content or ""
    assert asked.model_extra is not None
    route = asked.model_extra["route"]
    assert route["action"] == "clarify"
    assert set(route["options"]) == {"units", "calculator"}
    assert question.startswith("Do you want me to")
    assert "(units)" in question and "(calculator)" in question
    answered = ask(client, AMBIGUOUS, question, "units")
    assert answered.model == "units"
    assert answered.model_extra is not None
    assert answered.model_extra["route"]["reason"] == "clarified_by_name"
    assert "48 kg" in (answered.choices[0].message.content or "")


def test_followup_stays_with_units(client: openai.OpenAI) -> None:
    first = ask(client, "convert 5 miles to km")
    followup = ask(
        client, "convert 5 miles to km", first.choices[0].message.content or "", "and in feet?"
    )
    assert followup.model == "units"
    assert "26400 ft" in (followup.choices[0].message.content or "")


def test_route_models_and_health(url: str) -> None:
    route = httpx.post(f"{url}/v1/route", json={"input": "how many ounces in 2 kg"}).json()
    assert (route["route"]["action"], route["route"]["expert"]) == ("dispatch", "units")
    ids = [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]]
    assert ids == ["auto", "calculator", "units", "general"]
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}
