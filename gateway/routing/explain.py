"""Why the router decided as it did, for an operator: the policy it applied (threshold and
required margin, on which scale) and the exemplars most similar to the request among
those of the experts it chose or offered, configured and learned alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from gateway.memory.records import Exemplar, ExemplarStore, Vector
from gateway.routing.router import Router

SUPPORT_K = 5


@dataclass(frozen=True, slots=True)
class Support:
    expert: str
    text: str
    similarity: float
    source: str  # config (an example or the description), or where a learned one came from
    id: str | None = None  # learned exemplars only


@dataclass(frozen=True, slots=True)
class Explanation:
    threshold: float
    margin: float
    scale: Literal["probability", "similarity"]
    aggregate: str
    exemplars: tuple[Support, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "threshold": round(self.threshold, 6),
            "margin": round(self.margin, 6),
            "scale": self.scale,
            "aggregate": self.aggregate,
            "exemplars": [asdict(s) for s in self.exemplars],
        }


def _learned(expert: str, exemplar: Exemplar, score: float) -> Support:
    return Support(expert, exemplar.text, round(score, 6), exemplar.source, exemplar.id)


async def explain(
    router: Router,
    store: ExemplarStore | None,
    vector: Vector,
    experts: Sequence[str],
    tenant: str,
    k: int = SUPPORT_K,
) -> Explanation:
    """The policy, and the `k` exemplars of `experts` nearest to `vector` (the tenant's
    learned good exemplars count, as they do in routing)."""
    found: list[Support] = []
    for expert in experts:
        configured = router.index.nearest(vector, expert, k)
        found += [Support(expert, text, score, "config") for text, score in configured]
        if store is not None:
            hits = await store.search(vector, k, expert=expert, tenant=tenant, good_only=True)
            found += [_learned(expert, hit.exemplar, hit.score) for hit in hits]
    found.sort(key=lambda s: -s.similarity)
    policy = router.policy
    return Explanation(
        threshold=policy.threshold,
        margin=policy.margin,
        scale="probability" if router.head is not None else "similarity",
        aggregate=policy.aggregate,
        exemplars=tuple(found[:k]),
    )
