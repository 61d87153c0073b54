"""Whether and how a chat request's answer is cached: the plan the request path follows.

Only what repeats is cached: an explicit temperature of 0, or a seed the expert honours
(OpenAI's default temperature is 1). The exact key covers every field that can change the
answer: the messages' text and whole shape (content parts, tool calls, names) and every
request field but those that do not (`user`, `metadata`, `store`, `stream_options`).
Similar-text (semantic) hits are only for plain-text requests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from experts.base import Message
from experts.specs import ExpertSpec
from gateway.capabilities import plain_text
from gateway.config import Config
from gateway.memory.cache import CacheRequest, cache_request
from gateway.memory.records import Vector
from gateway.outcomes import ChatCall

# Request fields that do not change the answer: not part of the cache key.
NOT_IN_CACHE_KEY = frozenset({"stream_options", "user", "metadata", "store"})


@dataclass(frozen=True, slots=True)
class CachePlan:
    request: CacheRequest  # its vector is filled in only when a semantic step needs it
    lookup: bool
    store: bool
    semantic: bool
    ttl_s: float

    def with_vector(self, vector: Vector) -> CachePlan:
        return replace(self, request=replace(self.request, vector=vector))


def plan_cache(
    config: Config,
    spec: ExpertSpec,
    call: ChatCall,
    messages: tuple[Message, ...],
    needs: frozenset[str],
) -> CachePlan:
    """The plan for a request's answer from `spec`'s expert (see the module's docstring)."""
    ttl = spec.cache_ttl_s if spec.cache_ttl_s is not None else config.cache.ttl_s
    repeatable = call.sampling.is_deterministic(spec.seed_deterministic)
    usable = config.cache.enabled and ttl > 0 and repeatable
    extra = {k: v for k, v in call.extra.items() if k not in NOT_IN_CACHE_KEY}
    params: dict[str, object] = {"sampling": call.sampling, "extra": extra}
    pairs = [(m.role, m.content) for m in messages]
    shapes = [shape_of(m) for m in messages]
    request = cache_request(call.tenant, spec.name, pairs, params, shapes=shapes)
    semantic = spec.semantic_cache if spec.semantic_cache is not None else config.cache.semantic
    semantic = semantic and plain_text(needs, call.extra)
    return CachePlan(
        request,
        lookup=usable and "no-cache" not in call.cache_control,
        store=usable and "no-store" not in call.cache_control,
        semantic=semantic,
        ttl_s=ttl,
    )


def shape_of(message: Message) -> object:
    """What of a message's whole shape the text view leaves out (parts, tool calls, names)."""
    raw = message.raw or {}
    return {k: v for k, v in raw.items() if not (k == "content" and isinstance(v, str))}
