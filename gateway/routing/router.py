"""Scores experts against a request vector and decides: Dispatch, Clarify or Fallback.

An expert's similarity is the cosine similarity of the request to that expert's exemplar
vectors, aggregated by `max` or by the mean of the top k. Without a fitted head that is
its score, and the rules apply to the similarities:

* the best score must clear `threshold`, else `on_no_match` applies (clarify or fallback);
* the best must lead the runner-up by `margin`, else the gateway asks (Clarify);
* a preferred expert (the one that answered the previous turn) wins a near-tie.

With a head (`gateway.routing.head`), an expert's score is its calibrated probability,
`in_scope * share`: `threshold` applies to `in_scope`, the probability that some expert
fits (below it: no match), and `margin` to the lead of the best expert's share over the
runner-up's (below it: the request is ambiguous between them, and the gateway asks which).
A decision's `margin` is the lead the rule compared, and `in_scope` is set with a head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from gateway.routing.clarify import ExpertProfile, question_for
from gateway.routing.embedder import Embedder
from gateway.routing.head import ProbabilityHead

Vector = NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Candidate:
    expert: str
    score: float


@dataclass(frozen=True, slots=True)
class Dispatch:
    expert: str
    score: float
    margin: float
    candidates: tuple[Candidate, ...]
    reason: str = "match"
    in_scope: float | None = None


@dataclass(frozen=True, slots=True)
class Clarify:
    question: str
    # The experts the question offers, best first.
    options: tuple[str, ...]
    candidates: tuple[Candidate, ...]
    reason: Literal["close_margin", "no_match"]
    score: float
    margin: float
    in_scope: float | None = None


@dataclass(frozen=True, slots=True)
class Fallback:
    expert: str
    candidates: tuple[Candidate, ...]
    score: float
    margin: float
    reason: str = "no_match"
    in_scope: float | None = None


Decision = Dispatch | Clarify | Fallback


@dataclass(frozen=True, slots=True)
class RouterPolicy:
    threshold: float = 0.45
    margin: float = 0.04
    on_no_match: Literal["clarify", "fallback"] = "clarify"
    fallback: str | None = None
    aggregate: Literal["max", "mean_topk"] = "max"
    top_k: int = 3
    max_candidates: int = 3
    # How close a preferred expert must be to win a near-tie; None: `margin`.
    prefer_margin: float | None = None


class ExemplarIndex:
    """Exemplar vectors grouped by expert, scored in one matrix product.

    `texts` (optional) are the exemplars' texts in the same order, for `nearest`.
    """

    def __init__(
        self,
        vectors: Mapping[str, NDArray[np.float32]],
        dim: int,
        texts: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.experts: tuple[str, ...] = tuple(vectors)
        blocks = [
            np.asarray(vectors[name], dtype=np.float32).reshape(-1, dim) for name in self.experts
        ]
        self._counts = np.array([len(block) for block in blocks], dtype=np.int64)
        self._matrix = np.concatenate(blocks) if blocks else np.zeros((0, dim), np.float32)
        self._starts = np.concatenate([[0], np.cumsum(self._counts)[:-1]]).astype(np.int64)
        self._positions = {name: i for i, name in enumerate(self.experts)}
        self.dim = dim
        self._texts = {name: tuple((texts or {}).get(name, ())) for name in self.experts}

    def nearest(self, vector: Vector, expert: str, k: int) -> list[tuple[str, float]]:
        """The `k` exemplars of `expert` most similar to `vector`: (text, similarity), best
        first; only exemplars whose text the index was given."""
        i = self._positions.get(expert)
        if i is None or k <= 0:
            return []
        start, count = int(self._starts[i]), int(self._counts[i])
        texts = self._texts[expert]
        if count == 0 or len(texts) != count:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(self.dim)
        sims = self._matrix[start : start + count] @ query
        order = np.argsort(-sims, kind="stable")[:k]
        return [(texts[j], round(float(sims[j]), 6)) for j in order]

    def count(self, expert: str) -> int:
        return int(self._counts[self.experts.index(expert)])

    def scores(
        self,
        vector: Vector,
        aggregate: str,
        top_k: int,
        extra: Mapping[str, Sequence[float]] | None = None,
    ) -> NDArray[np.float32]:
        """One score per expert (in `self.experts` order); -1 for an expert with no exemplars.

        `extra` adds similarities of further exemplars per expert (runtime exemplars found
        in the memory); they count exactly like the indexed ones.
        """
        sims = self._matrix @ np.asarray(vector, dtype=np.float32).reshape(self.dim)
        if aggregate == "max":
            return self._max_scores(sims, extra or {})
        out = np.full(len(self.experts), -1.0, dtype=np.float32)
        for i, (start, count) in enumerate(zip(self._starts, self._counts, strict=True)):
            block = sims[start : start + count]
            more = (extra or {}).get(self.experts[i])
            if more:
                block = np.concatenate([block, np.asarray(more, dtype=np.float32)])
            if len(block) == 0:
                continue
            if len(block) == 1:
                out[i] = block.max()
            else:
                k = min(top_k, len(block))
                out[i] = np.partition(block, len(block) - k)[len(block) - k :].mean()
        return out

    def _max_scores(
        self, sims: NDArray[np.float32], extra: Mapping[str, Sequence[float]]
    ) -> NDArray[np.float32]:
        """The best similarity per expert, in one pass over the contiguous blocks."""
        out = np.full(len(self.experts), -1.0, dtype=np.float32)
        filled = self._counts > 0
        if filled.any():
            out[filled] = np.maximum.reduceat(sims, self._starts[filled])
        for name, more in extra.items():
            if more and name in self._positions:
                i = self._positions[name]
                out[i] = max(float(out[i]), max(float(x) for x in more))
        return out

    def score_matrix(self, vectors: NDArray[np.float32], aggregate: str, top_k: int) -> Vector:
        """`scores` for many vectors at once, [n, experts] (no runtime exemplars)."""
        rows = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        out = np.full((len(rows), len(self.experts)), -1.0, dtype=np.float32)
        for first in range(0, len(rows), 1024):
            sims = rows[first : first + 1024] @ self._matrix.T
            chunk = out[first : first + 1024]
            for i, (start, count) in enumerate(zip(self._starts, self._counts, strict=True)):
                if count == 0:
                    continue
                block = sims[:, start : start + count]
                if aggregate == "max" or count == 1:
                    chunk[:, i] = block.max(axis=1)
                else:
                    k = min(top_k, int(count))
                    chunk[:, i] = np.partition(block, count - k, axis=1)[:, count - k :].mean(1)
        return out


class Router:
    def __init__(
        self,
        index: ExemplarIndex,
        policy: RouterPolicy,
        profiles: Mapping[str, ExpertProfile],
        profile_vectors: Mapping[str, Vector] | None = None,
        head: ProbabilityHead | None = None,
    ) -> None:
        if policy.fallback is not None and policy.fallback not in profiles:
            raise ValueError(f"fallback expert '{policy.fallback}' is not known")
        if head is not None and head.linear.n_experts != len(index.experts):
            raise ValueError("the head was fitted for a different set of experts")
        self.index = index
        self.policy = policy
        self.profiles = profiles
        self.profile_vectors = dict(profile_vectors or {})
        self.head = head

    def rank(
        self,
        vector: Vector,
        extra: Mapping[str, Sequence[float]] | None = None,
        allowed: frozenset[str] | None = None,
    ) -> tuple[Candidate, ...]:
        """Experts best first, with their scores (probabilities when a head is fitted)."""
        return self._assess(vector, extra, allowed).ranked

    def _assess(
        self,
        vector: Vector,
        extra: Mapping[str, Sequence[float]] | None,
        allowed: frozenset[str] | None = None,
    ) -> _Assessed:
        similarities = self.index.scores(vector, self.policy.aggregate, self.policy.top_k, extra)
        in_scope: float | None = None
        relative: NDArray[np.floating] = similarities
        scores: NDArray[np.floating] = similarities
        if self.head is not None:
            in_scope, relative = self.head.assess(vector, similarities)
            scores = relative * in_scope
        experts = self.index.experts
        order = [
            i
            for i in np.argsort(-relative, kind="stable")
            if allowed is None or experts[i] in allowed
        ]
        ranked = tuple(Candidate(experts[i], round(float(scores[i]), 6)) for i in order)
        leads = {self.index.experts[i]: round(float(relative[i]), 6) for i in order}
        return _Assessed(ranked, leads, None if in_scope is None else round(in_scope, 6))

    def decide(
        self,
        vector: Vector,
        prefer: str | None = None,
        extra: Mapping[str, Sequence[float]] | None = None,
        *,
        allowed: frozenset[str] | None = None,
        ask: bool = True,
    ) -> Decision:
        """Decide for `vector`; `extra` are further exemplar similarities per expert.

        Only `allowed` experts (None: all) are candidates: those that can take what the
        request carries. With `ask` false a question is no answer (the request forces a
        tool call, or is in the middle of a tool loop): where the rules would ask, the
        best candidate is dispatched, with reason `unasked_<why>`.
        """
        assessed = self._assess(vector, extra, allowed)
        ranked, relative, in_scope = assessed.ranked, assessed.relative, assessed.in_scope
        if not ranked:
            raise ValueError("router has no experts")
        best = ranked[0]
        top = relative[best.expert]
        floor = 0.0 if self.head is not None else -1.0
        runner_up = relative[ranked[1].expert] if len(ranked) > 1 else floor
        margin = round(top - runner_up, 6)
        policy = self.policy
        level = top if in_scope is None else in_scope
        if level < policy.threshold:
            fallback = policy.fallback
            takes = fallback is not None and (allowed is None or fallback in allowed)
            if policy.on_no_match == "fallback" and fallback is not None and takes:
                return Fallback(fallback, ranked, best.score, margin, in_scope=in_scope)
            if not ask:
                return Dispatch(best.expert, best.score, margin, ranked, "unasked_no_match",
                                in_scope)  # fmt: skip
            return self._clarify(assessed, "no_match", margin)
        preferred = next((c for c in ranked if c.expert == prefer), None)
        if preferred is not None and self._wins_tie(assessed, best, preferred):
            return Dispatch(
                preferred.expert, preferred.score, margin, ranked, "preferred", in_scope
            )
        if margin >= policy.margin:
            return Dispatch(best.expert, best.score, margin, ranked, in_scope=in_scope)
        if not ask:
            return Dispatch(best.expert, best.score, margin, ranked, "unasked_close_margin",
                            in_scope)  # fmt: skip
        return self._clarify(assessed, "close_margin", margin)

    def _wins_tie(self, assessed: _Assessed, best: Candidate, preferred: Candidate) -> bool:
        """The preferred expert is close enough to the best (which cleared the threshold);
        without a head its own similarity must clear the threshold too."""
        policy = self.policy
        if preferred.expert == best.expert:
            return False
        near = policy.margin if policy.prefer_margin is None else policy.prefer_margin
        own = assessed.relative[preferred.expert]
        clears = self.head is not None or own >= policy.threshold
        return clears and assessed.relative[best.expert] - own < near

    def closest_profile(
        self, vector: Vector, options: Sequence[str], min_score: float
    ) -> str | None:
        """The option whose profile (ask phrase and description) is most like `vector`."""
        scored = [
            (float(self.profile_vectors[name] @ vector), name)
            for name in options
            if name in self.profile_vectors
        ]
        if not scored:
            return None
        score, name = max(scored)
        return name if score >= min_score else None

    def _clarify(
        self,
        assessed: _Assessed,
        reason: Literal["close_margin", "no_match"],
        margin: float,
    ) -> Clarify:
        ranked, relative = assessed.ranked, assessed.relative
        limit = self.policy.max_candidates
        if reason == "close_margin":
            # Offer those close to the best (without a head: that clear the threshold too),
            # at least two.
            cutoff = relative[ranked[0].expert] - 2 * self.policy.margin
            floor = max(cutoff, self.policy.threshold if self.head is None else cutoff)
            close = [c for c in ranked if relative[c.expert] >= floor]
            options = close if len(close) >= 2 else list(ranked[:2])
        else:
            options = list(ranked)
        names = tuple(c.expert for c in options[:limit])
        question = question_for([self.profiles[name] for name in names], reason)
        return Clarify(question, names, ranked, reason, ranked[0].score, margin, assessed.in_scope)


@dataclass(frozen=True, slots=True)
class _Assessed:
    """Experts best first with their scores; each one's value on the margin's scale (its
    similarity, or its share with a head); the probability that some expert fits."""

    ranked: tuple[Candidate, ...]
    relative: Mapping[str, float]
    in_scope: float | None


async def build_router(
    policy: RouterPolicy,
    profiles: Mapping[str, ExpertProfile],
    examples: Mapping[str, Sequence[str]],
    embedder: Embedder,
    *,
    use_descriptions: bool = True,
) -> Router:
    """Embed every expert's examples (and description) and its profile; build the router."""
    names = list(profiles)
    texts: dict[str, list[str]] = {}
    for name in names:
        own = list(examples.get(name, ()))
        if use_descriptions or not own:
            own.append(profiles[name].description)
        texts[name] = own
    flat = [text for name in names for text in texts[name]]
    profile_texts = [profiles[name].text for name in names]
    vectors = await embedder.embed(flat + profile_texts)
    grouped: dict[str, Vector] = {}
    start = 0
    for name in names:
        grouped[name] = vectors[start : start + len(texts[name])]
        start += len(texts[name])
    profile_vectors = {name: vectors[start + i] for i, name in enumerate(names)}
    index = ExemplarIndex(grouped, embedder.dim, texts)
    return Router(index, policy, profiles, profile_vectors)
