"""Answers in OpenAI's shape: chunks merge the way OpenAI's client accumulates them, and a
whole answer split into chunks merges back into itself."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from experts.base import Delta, Usage
from gateway.answers import Answer, merge_chunks, split_completion
from tests.protocol import canned

texts = st.text(max_size=12)
json_leaf = st.none() | st.booleans() | st.integers(-5, 5) | texts
calls = st.lists(
    st.fixed_dictionaries(
        {
            "id": texts,
            "type": st.just("function"),
            "function": st.fixed_dictionaries({"name": texts, "arguments": texts}),
        }
    ),
    max_size=3,
)
messages = st.fixed_dictionaries(
    {"role": st.just("assistant"), "content": st.none() | texts, "refusal": st.none() | texts},
    optional={
        "tool_calls": calls,
        "reasoning_content": texts,
        "annotations": st.lists(st.dictionaries(texts, json_leaf, max_size=2), max_size=2),
        "unknown": st.dictionaries(texts, json_leaf, max_size=3),
    },
)
logprobs = st.none() | st.fixed_dictionaries(
    {
        "content": st.lists(
            st.fixed_dictionaries({"token": texts, "logprob": st.floats(-9, 0)}), max_size=3
        ),
        "refusal": st.none(),
    }
)
completions = st.builds(
    lambda choices, extra, usage: {
        "object": "chat.completion",
        **extra,
        "choices": [{"index": i, **c} for i, c in enumerate(choices)],
        **({"usage": usage} if usage else {}),
    },
    st.lists(
        st.fixed_dictionaries(
            {
                "message": messages,
                "logprobs": logprobs,
                "finish_reason": st.sampled_from(["stop", "length", "tool_calls"]),
            },
            optional={"stop_reason": json_leaf},
        ),
        min_size=1,
        max_size=3,
    ),
    st.dictionaries(st.sampled_from(["system_fingerprint", "service_tier", "x"]), texts),
    st.none() | st.just({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
)


@settings(max_examples=200, deadline=None)
@given(completions)
def test_a_split_answer_merges_back_into_itself(completion: dict[str, Any]) -> None:
    assert merge_chunks(split_completion(completion)) == completion


def test_streamed_tool_call_arguments_merge_by_index() -> None:
    merged = merge_chunks(canned.TOOL_CALL_CHUNKS)
    message = merged["choices"][0]["message"]
    assert message["tool_calls"] == canned.TOOL_CALLS["choices"][0]["message"]["tool_calls"]
    assert message["reasoning_content"] == "Two lookups are needed."
    assert merged["choices"][0]["finish_reason"] == "tool_calls"
    assert merged["usage"] == canned.USAGE
    assert merged["system_fingerprint"] == "fp_canned"


def test_choices_and_logprobs_merge_per_index() -> None:
    merged = merge_chunks(canned.TWO_CHOICES_CHUNKS)
    expected = canned.TWO_CHOICES["choices"]
    assert [c["message"]["content"] for c in merged["choices"]] == ["Hi there", "Hello"]
    assert merged["choices"][0]["logprobs"] == expected[0]["logprobs"]
    assert [c["finish_reason"] for c in merged["choices"]] == ["stop", "stop"]


def test_an_answer_collects_text_view_and_whole_shape() -> None:
    answer = Answer()
    for chunk in canned.TOOL_CALL_CHUNKS:
        answer.add(Delta(chunk=chunk, usage=Usage(1, 2, 3) if not chunk["choices"] else None))
    assert answer.tool_call_ids() == ["call_weather_1", "call_time_2"]
    assert answer.usage == Usage(1, 2, 3)
    text_only = Answer()
    text_only.add(Delta("Hi"))
    text_only.add(Delta(" there", "stop"))
    assert (text_only.text, text_only.finish_reason, text_only.completion()) == (
        "Hi there", "stop", None
    )  # fmt: skip
