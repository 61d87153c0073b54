"""`taskgate eval`: measure routing on a labelled data set, exactly as the gateway routes.

Each train label becomes an expert whose examples are its texts; rows labelled `oos`
are out of scope and become the router's negative examples. The router is built by the
gateway's own builder (the same head fitting and calibration, on the validation file if
given, else on folds of the exemplars), and every test text goes through the single-
request path the server uses (`ConversationRouter.route` with one user message).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from experts.base import Message
from gateway.config import EmbedderConfig, RouterConfig
from gateway.memory.pending import LocalConversationMemory
from gateway.routing.builder import RouterBuilder, routing_spec
from gateway.routing.conversation import ConversationRouter, RoutingOptions
from gateway.routing.embedder import SentenceTransformerEmbedder, resolve_embedder_path
from gateway.routing.fitting import FitReport
from gateway.routing.router import Clarify, Dispatch, Router

OOS = "oos"
WARMUP_REQUESTS = 20
Progress = Callable[[str], None]


class DatasetError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Labelled:
    text: str
    label: str


@dataclass(frozen=True, slots=True)
class ExpertEntry:
    name: str
    description: str
    ask: str | None
    examples: Sequence[str]


@dataclass(frozen=True, slots=True)
class Outcome:
    label: str
    # The expert the request was dispatched to; None: clarified or fell back.
    routed: str | None
    action: str
    best: str
    # What the threshold applies to (the probability that some expert fits, with a head;
    # else the best similarity), and the lead the margin applies to.
    score: float
    margin: float
    latency_ms: float


@dataclass(frozen=True, slots=True)
class EvalResult:
    metrics: dict[str, object]
    outcomes: list[Outcome]
    fit: FitReport | None
    threshold: float
    margin: float


def embedder_name(ref: str) -> str:
    """`builtin:NAME` as is; a model directory by its name (no machine paths in reports)."""
    return ref if ref.startswith("builtin:") else Path(ref).name


def read_jsonl(path: Path) -> list[Labelled]:
    """One `{"text": ..., "label": ...}` per line; blank lines are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_jsonl(text, str(path))


def parse_jsonl(text: str, name: str) -> list[Labelled]:
    """`read_jsonl` of a file's text; `name` names it in the errors."""
    rows: list[Labelled] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{name}:{number}: invalid JSON: {exc.msg}") from exc
        if not isinstance(row, dict) or not all(
            isinstance(row.get(key), str) for key in ("text", "label")
        ):
            raise DatasetError(f'{name}:{number}: expected {{"text": str, "label": str}}')
        rows.append(Labelled(row["text"], row["label"]))
    if not rows:
        raise DatasetError(f"{name}: no rows")
    return rows


def experts_of(train: Sequence[Labelled]) -> list[ExpertEntry]:
    """One expert per in-scope label, in order of first appearance."""
    grouped: dict[str, list[str]] = {}
    for row in train:
        if row.label != OOS:
            grouped.setdefault(row.label, []).append(row.text)
    if len(grouped) < 2:
        raise DatasetError("the train file needs at least two labels besides 'oos'")
    return [ExpertEntry(name, name, None, texts) for name, texts in grouped.items()]


async def evaluate(
    train: Sequence[Labelled],
    test: Sequence[Labelled],
    validation: Sequence[Labelled] | None,
    *,
    embedder_ref: str,
    router_config: RouterConfig,
    embedder_config: EmbedderConfig,
    cache_dir: Path | None,
    progress: Progress | None = None,
) -> EvalResult:
    say = progress or (lambda _: None)
    experts = experts_of(train)
    negatives = [row.text for row in train if row.label == OOS]
    config = router_config.model_copy(
        update={
            "use_descriptions": False,
            "negative_examples": [*router_config.negative_examples, *negatives],
        }
    )
    spec = routing_spec(config, experts)
    if validation is not None:
        known = {e.name for e in experts}
        pairs = [(r.text, r.label if r.label in known else None) for r in validation]
        spec = replace(spec, validation=pairs)
    embedder = SentenceTransformerEmbedder(
        resolve_embedder_path(embedder_ref),
        device=embedder_config.device,
        precision=embedder_config.precision,
        batch_size=embedder_config.batch_size,
        batch_wait_ms=embedder_config.batch_wait_ms,
        cache_size=0,  # every test request is embedded, as a new request would be
        runtime=embedder_config.runtime if cache_dir is not None else "torch",
        onnx_dir=cache_dir / "onnx" if cache_dir is not None else None,
    )
    await embedder.start()
    try:
        say(f"building the router: {len(experts)} experts, {len(train)} train rows")
        builder = RouterBuilder(embedder, cache_dir)
        router = await builder.build(spec)
        say(f"routing {len(test)} test requests one at a time")
        outcomes = await _route_all(embedder, router, config, train, test)
    finally:
        await embedder.aclose()
    fit = builder.last_fit
    metrics = metrics_of(outcomes, fit)
    metrics["top1_accuracy"] = top1_accuracy(outcomes)
    metrics["accuracy_at_oos_recall_0.9"] = accuracy_at_recall(outcomes, router.policy.margin, 0.9)
    metrics.update(
        n_train=len(train),
        n_experts=len(experts),
        head=router.head is not None,
        threshold=round(router.policy.threshold, 6),
        margin=round(router.policy.margin, 6),
        target=fit.target if fit is not None else None,
        embedder=f"{embedder_name(embedder_ref)} ({embedder.precision}, {embedder.runtime})",
    )
    return EvalResult(metrics, outcomes, fit, router.policy.threshold, router.policy.margin)


async def _route_all(
    embedder: SentenceTransformerEmbedder,
    router: Router,
    config: RouterConfig,
    train: Sequence[Labelled],
    test: Sequence[Labelled],
) -> list[Outcome]:
    options = RoutingOptions(
        followup_max_words=config.followup_max_words, resolve_threshold=config.resolve_threshold
    )
    conversation = ConversationRouter(embedder, lambda: router, LocalConversationMemory(), options)
    for row in train[:WARMUP_REQUESTS]:  # load code paths and caches, not measured
        await conversation.route([Message("user", row.text)], "eval", remember=False)
    outcomes: list[Outcome] = []
    for row in test:
        started = time.perf_counter()
        routed = await conversation.route([Message("user", row.text)], "eval", remember=False)
        elapsed = (time.perf_counter() - started) * 1000
        decision = routed.decision
        ranked = decision.candidates
        outcomes.append(
            Outcome(
                label=row.label,
                routed=decision.expert if isinstance(decision, Dispatch) else None,
                action="clarify"
                if isinstance(decision, Clarify)
                else ("dispatch" if isinstance(decision, Dispatch) else "fallback"),
                best=ranked[0].expert,
                score=ranked[0].score if decision.in_scope is None else decision.in_scope,
                margin=decision.margin,
                latency_ms=elapsed,
            )
        )
    return outcomes


def metrics_of(outcomes: Sequence[Outcome], fit: FitReport | None) -> dict[str, object]:
    inside = [o for o in outcomes if o.label != OOS]
    outside = [o for o in outcomes if o.label == OOS]
    rejected = [o for o in outcomes if o.routed is None]
    latencies = np.array([o.latency_ms for o in outcomes]) if outcomes else np.zeros(1)
    return {
        "in_scope_accuracy": _ratio(sum(o.routed == o.label for o in inside), len(inside)),
        "oos_recall": _ratio(sum(o.routed is None for o in outside), len(outside))
        if outside
        else None,
        "oos_precision": _ratio(sum(o.label == OOS for o in rejected), len(rejected))
        if outside
        else None,
        "clarify_rate": _ratio(sum(o.action == "clarify" for o in outcomes), len(outcomes)),
        "macro_f1": round(macro_f1(outcomes), 4),
        "latency_ms": {
            "p50": round(float(np.percentile(latencies, 50)), 3),
            "p99": round(float(np.percentile(latencies, 99)), 3),
        },
        "fit_seconds": round(fit.seconds, 3) if fit is not None else 0.0,
        "fit_cached": fit.cached if fit is not None else False,
        "n_test": len(outcomes),
    }


def top1_accuracy(outcomes: Sequence[Outcome]) -> float:
    """In-scope items whose best-scored expert is their own, whatever the threshold."""
    inside = [o for o in outcomes if o.label != OOS]
    return _ratio(sum(o.best == o.label for o in inside), len(inside))


def accuracy_at_recall(outcomes: Sequence[Outcome], margin: float, recall: float) -> float | None:
    """The best in-scope accuracy over the thresholds whose out-of-scope recall on these
    items is at least `recall`: a threshold chosen on the test set itself, so a reference
    for comparing embedders or heads, not an operating point. None without oos items."""
    if not any(o.label == OOS for o in outcomes):
        return None
    _, accuracy, recalls = threshold_curve(outcomes, margin, points=2001)
    feasible = [a for a, r in zip(accuracy, recalls, strict=True) if r >= recall]
    return round(max(feasible), 4) if feasible else 0.0


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def macro_f1(outcomes: Sequence[Outcome]) -> float:
    """F1 per class (every expert, and `oos` for not dispatched), averaged."""
    truth = [o.label for o in outcomes]
    predicted = [o.routed if o.routed is not None else OOS for o in outcomes]
    classes = sorted(set(truth) | set(predicted))
    hits = Counter(t for t, p in zip(truth, predicted, strict=True) if t == p)
    true_counts, predicted_counts = Counter(truth), Counter(predicted)
    scores = []
    for name in classes:
        denominator = true_counts[name] + predicted_counts[name]
        scores.append(2 * hits[name] / denominator if denominator else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def confusions(outcomes: Sequence[Outcome], top: int = 12) -> list[tuple[str, str, int]]:
    """The most frequent (true label, where it went) pairs among the mistakes."""
    pairs = Counter(
        (o.label, o.routed if o.routed is not None else f"({o.action})")
        for o in outcomes
        if (o.routed or OOS) != o.label
    )
    return [(truth, got, count) for (truth, got), count in pairs.most_common(top)]


def threshold_curve(
    outcomes: Sequence[Outcome], margin: float, points: int = 101
) -> tuple[list[float], list[float], list[float]]:
    """In-scope accuracy and oos recall if the threshold were each of `points` values."""
    scores = np.array([o.score for o in outcomes])
    gaps = np.array([o.margin for o in outcomes])
    correct = np.array([o.best == o.label for o in outcomes])
    inside = np.array([o.label != OOS for o in outcomes])
    low, high = float(min(scores.min(), 0.0)), float(max(scores.max(), 1.0))
    thresholds = list(np.linspace(low, high, points))
    accuracy, recall = [], []
    for threshold in thresholds:
        sent = (scores >= threshold) & (gaps >= margin)
        accuracy.append(float((sent & correct)[inside].mean()) if inside.any() else 0.0)
        recall.append(float((~sent)[~inside].mean()) if (~inside).any() else 0.0)
    return [float(t) for t in thresholds], accuracy, recall
