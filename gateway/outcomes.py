"""The gateway's request and answer values, independent of HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace

from experts.base import Delta, JSONValue, Message, Sampling
from gateway.routing.conversation import Routed
from gateway.routing.router import Candidate, Dispatch, Fallback

AUTO = "auto"


@dataclass(frozen=True, slots=True)
class ChatCall:
    """A validated chat request, as the gateway sees it."""

    model: str
    messages: tuple[Message, ...]
    sampling: Sampling = field(default_factory=Sampling)
    extra: Mapping[str, JSONValue] = field(default_factory=dict)
    tenant: str = "default"
    request_id: str = ""
    # Cache-Control directives: "no-cache" skips cache lookups, "no-store" storing.
    cache_control: frozenset[str] = frozenset()
    # Whether the client streams the answer (a non-streamed one is asked for whole).
    stream: bool = False


@dataclass(frozen=True, slots=True)
class RouteInfo:
    action: str  # dispatch | clarify | fallback
    expert: str | None
    score: float | None
    margin: float | None
    candidates: tuple[Candidate, ...]
    reason: str
    question: str | None = None
    options: tuple[str, ...] = ()
    cached: str | None = None  # exact | semantic
    # How many few-shot exemplars preceded the request.
    fewshot: int = 0
    # With a fitted routing head: the probability that some expert fits the request.
    in_scope: float | None = None

    def with_expert(self, expert: str, reason: str) -> RouteInfo:
        return replace(self, expert=expert, reason=reason)

    def with_cached(self, kind: str) -> RouteInfo:
        return replace(self, cached=kind)

    def with_fewshot(self, count: int) -> RouteInfo:
        return replace(self, fewshot=count)

    def to_json(self) -> dict[str, JSONValue]:
        body: dict[str, JSONValue] = {
            "action": self.action,
            "expert": self.expert,
            "score": self.score,
            "margin": self.margin,
            "in_scope": self.in_scope,
            "reason": self.reason,
            "cached": self.cached,
            "fewshot": self.fewshot,
            "candidates": [{"expert": c.expert, "score": c.score} for c in self.candidates],
        }
        if self.question is not None:
            body["question"] = self.question
            body["options"] = list(self.options)
        return body


@dataclass(slots=True)
class Reply:
    id: str
    created: int
    model: str
    route: RouteInfo
    deltas: AsyncIterator[Delta]


def route_info(routed: Routed) -> RouteInfo:
    d = routed.decision
    if isinstance(d, Dispatch | Fallback):
        action = "dispatch" if isinstance(d, Dispatch) else "fallback"
        return RouteInfo(
            action, d.expert, d.score, d.margin, d.candidates, d.reason, in_scope=d.in_scope
        )
    return RouteInfo(
        "clarify",
        None,
        d.score,
        d.margin,
        d.candidates,
        d.reason,
        d.question,
        d.options,
        in_scope=d.in_scope,
    )
