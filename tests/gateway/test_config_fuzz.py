"""Fuzzing the config loader: whatever the text, a `Config` or a `ConfigError`, quickly.

Bounded (a few hundred examples, no deadline flakiness). Findings stay as explicit
regression tests at the end of this file.
"""

from __future__ import annotations

import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError, default_config_text, parse_config

FUZZ = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
KEYS = [
    "server",
    "auth",
    "none",
    "keys",
    "keys_file",
    "limits",
    "rpm",
    "embedder",
    "memory",
    "backend",
    "url",
    "router",
    "threshold",
    "target",
    "oos_recall",
    "experts",
    "name",
    "kind",
    "tool",
    "openai",
    "local",
    "fusion",
    "base_url",
    "model",
    "description",
    "examples",
    "fallbacks",
    "timeout_s",
    "calculator",
    "units",
    "max_tokens",
    "head",
]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
    st.sampled_from(KEYS), st.text(max_size=20), st.just("${UNSET}"), st.just("${X:-d}"),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(KEYS) | st.text(max_size=8) | st.integers(), inner, max_size=5
        )
    ),
    max_leaves=30,
)


def loads_or_refuses(text: str) -> None:
    started = time.monotonic()
    try:
        parse_config(text, "fuzz.yaml", {"X": "x"})
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml")
    assert time.monotonic() - started < 5


@FUZZ
@given(st.text(max_size=400))
def test_any_text(text: str) -> None:
    loads_or_refuses(text)


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6))
def test_any_yaml_document(document: dict[str, object]) -> None:
    loads_or_refuses(yaml.safe_dump(document))


@FUZZ
@given(st.data())
def test_edits_of_the_default_config(data: st.DataObject) -> None:
    lines = default_config_text().splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(lines) - 1))
        edit = data.draw(st.sampled_from(["drop", "dup", "indent", "garble"]))
        if edit == "drop":
            del lines[at]
        elif edit == "dup":
            lines.insert(at, lines[at])
        elif edit == "indent":
            lines[at] = "  " + lines[at]
        else:
            lines[at] = data.draw(st.text(max_size=30))
        if not lines:
            break
    loads_or_refuses("\n".join(lines))


# Findings, kept as regression tests.

ALIAS_BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
    for prev, name in zip("abcdefghij", "bcdefghijk", strict=True)
)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5000,  # nesting deep enough to exhaust the recursion limit
        "a: " + "[" * 5000 + "]" * 5000,
        "a: &a [x, x, x, x, x, x, x, x, x]\n" + ALIAS_BOMB,  # 9**10 values once expanded
    ],
    ids=["deep-list", "deep-value", "alias-bomb"],
)
def test_pathological_documents_are_refused_quickly(text: str) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"nested deeper|more than"):
        parse_config(text, "fuzz.yaml", {})
    assert time.monotonic() - started < 5


def test_an_error_inside_auth_keys_names_the_field() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("auth: {keys: [{id: 1}]}\nexperts: []\n", "c.yaml", {})
    paths = {issue.path for issue in caught.value.issues}
    assert {"auth.keys.0.id", "auth.keys.0.tenant", "experts"} <= paths
