"""Fitting the routing head: held-out data, calibration, and the on-disk cache.

`fit_head` is synchronous and CPU-bound; the router builder runs it in a worker thread,
so requests keep being served by the previous router meanwhile.

Held-out data come from a validation set when one is given (`taskgate eval --val`), else
from `folds` folds of the exemplars: each fold is predicted by a head fitted on the
others. Without negative examples, the folds also hold whole experts out (a different
group per fold), so that "none of my experts" is represented by requests of an expert
the fold's head never saw.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np

from gateway.routing.calibrate import Calibrated, HeldOut, OperatingPoint, Target, calibrate
from gateway.routing.fitcache import ArrayCache, Hasher
from gateway.routing.head import (
    HEAD_VERSION,
    Combination,
    Floats,
    Gate,
    Ints,
    LinearHead,
    ProbabilityHead,
    fit_linear,
)
from gateway.routing.router import ExemplarIndex

logger = logging.getLogger(__name__)

HeadMode = Literal["auto", "on", "off"]
DEFAULT_TARGET = Target("precision", 0.9)
# The combination is fitted on at most this many held-out items (all negatives kept).
_MAX_CALIBRATION_ITEMS = 6000
_SEED = 20240601


@dataclass(frozen=True, slots=True)
class HeadOptions:
    mode: HeadMode = "auto"
    # "auto" fits a head when every expert has at least this many examples.
    min_examples: int = 20
    c: float = 10.0
    folds: int = 5
    max_iter: int = 300
    target: Target | None = None
    # Fixed numbers (probabilities) that override the calibrated ones.
    threshold: float | None = None
    margin: float | None = None
    aggregate: str = "max"
    top_k: int = 3


@dataclass(frozen=True, slots=True, eq=False)
class Exemplars:
    """Vectors with labels: an expert index, or -1 for a negative (out-of-scope) example."""

    vectors: Floats
    targets: Ints
    experts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FitReport:
    # How long the fit took when it was made (a cache hit reports the original time).
    seconds: float
    cached: bool
    held_out: Literal["validation", "folds"]
    n_held_out: int
    target: str
    point: OperatingPoint
    mix: Combination


@dataclass(frozen=True, slots=True, eq=False)
class FittedHead:
    head: ProbabilityHead
    threshold: float
    margin: float
    report: FitReport


def head_wanted(options: HeadOptions, examples_per_expert: Mapping[str, int]) -> bool:
    """Whether to fit: "on" with at least two examples of two experts; "auto" with
    `min_examples` for every expert; never "off"."""
    counts = list(examples_per_expert.values())
    if options.mode == "off" or len(counts) < 2:
        return False
    needed = 2 if options.mode == "on" else max(2, options.min_examples)
    return min(counts) >= needed


def fit_head(
    exemplars: Exemplars,
    options: HeadOptions,
    validation: Exemplars | None = None,
    cache: ArrayCache | None = None,
) -> FittedHead:
    key = _cache_key(exemplars, options, validation)
    if cache is not None:
        loaded = _load(cache, key)
        if loaded is not None:
            return loaded
    started = time.monotonic()
    n_experts = len(exemplars.experts)
    linear = fit_linear(
        exemplars.vectors, exemplars.targets, n_experts, c=options.c, max_iter=options.max_iter
    )
    source: Literal["validation", "folds"] = "folds" if validation is None else "validation"
    if validation is not None:
        held = _validation_held_out(linear, exemplars, validation, options)
    else:
        held = _fold_held_out(exemplars, options)
    chosen = _calibrate(held, options)
    report = FitReport(
        seconds=round(time.monotonic() - started, 3),
        cached=False,
        held_out=source,
        n_held_out=len(held.labels),
        target=str(chosen.target),
        point=chosen.point,
        mix=chosen.mix,
    )
    fitted = FittedHead(
        ProbabilityHead(linear, chosen.mix),
        threshold=options.threshold if options.threshold is not None else chosen.point.threshold,
        margin=options.margin if options.margin is not None else chosen.point.margin,
        report=report,
    )
    if cache is not None:
        _store(cache, key, fitted)
    return fitted


def _calibrate(held: HeldOut, options: HeadOptions) -> Calibrated:
    target = options.target or DEFAULT_TARGET
    if target.kind == "oos_recall" and not held.has_negatives:
        logger.warning(
            "no out-of-scope items to calibrate oos_recall on; using the precision target",
            extra={"action": "calibrate"},
        )
        target = DEFAULT_TARGET
    return calibrate(_subsample(held), target)


def _subsample(held: HeldOut) -> HeldOut:
    """At most `_MAX_CALIBRATION_ITEMS` items, every negative kept (deterministic)."""
    if len(held.labels) <= _MAX_CALIBRATION_ITEMS:
        return held
    rng = np.random.default_rng(_SEED)
    negatives = np.flatnonzero(held.labels < 0)
    positives = np.flatnonzero(held.labels >= 0)
    room = max(_MAX_CALIBRATION_ITEMS - len(negatives), 1)
    keep = np.sort(np.concatenate([negatives, rng.choice(positives, room, replace=False)]))
    return HeldOut(held.logits[keep], held.similarities[keep], held.labels[keep], held.has_none)


def _index_of(vectors: Floats, targets: Ints, n_experts: int, dim: int) -> ExemplarIndex:
    grouped = {str(k): vectors[targets == k] for k in range(n_experts)}
    return ExemplarIndex(grouped, dim)


def _validation_held_out(
    linear: LinearHead, exemplars: Exemplars, validation: Exemplars, options: HeadOptions
) -> HeldOut:
    dim = exemplars.vectors.shape[1]
    index = _index_of(exemplars.vectors, exemplars.targets, len(exemplars.experts), dim)
    sims = index.score_matrix(validation.vectors, options.aggregate, options.top_k)
    return HeldOut(linear.logits(validation.vectors), sims, validation.targets, linear.has_none)


def _fold_held_out(exemplars: Exemplars, options: HeadOptions) -> HeldOut:
    vectors, targets = exemplars.vectors, exemplars.targets
    n_experts, dim = len(exemplars.experts), vectors.shape[1]
    rng = np.random.default_rng(_SEED)
    folds = max(2, min(options.folds, int(np.bincount(targets[targets >= 0]).min())))
    fold_of = np.zeros(len(targets), dtype=np.int64)
    for label in np.unique(targets):  # stratified: each label spread over the folds
        members = rng.permutation(np.flatnonzero(targets == label))
        fold_of[members] = np.arange(len(members)) % folds
    pseudo = not bool(np.any(targets < 0)) and n_experts >= 4
    group_of = rng.permutation(n_experts) % folds if pseudo else None
    has_none = bool(np.any(targets < 0))
    parts: list[HeldOut] = []
    for fold in range(folds):
        held_expert = np.zeros(len(targets), dtype=bool)
        if group_of is not None:
            held_expert = (targets >= 0) & (group_of[np.maximum(targets, 0)] == fold)
        test, train = fold_of == fold, (fold_of != fold) & ~held_expert
        linear = fit_linear(
            vectors[train],
            targets[train],
            n_experts,
            c=options.c,
            max_iter=options.max_iter,
            with_none=has_none,
        )
        index = _index_of(vectors[train], targets[train], n_experts, dim)
        labels = np.where(held_expert[test], -1, targets[test])
        sims = index.score_matrix(vectors[test], options.aggregate, options.top_k)
        parts.append(HeldOut(linear.logits(vectors[test]), sims, labels, linear.has_none))
    return HeldOut(
        np.concatenate([p.logits for p in parts]),
        np.concatenate([p.similarities for p in parts]),
        np.concatenate([p.labels for p in parts]),
        has_none,
    )


def _cache_key(exemplars: Exemplars, options: HeadOptions, validation: Exemplars | None) -> str:
    import sklearn

    hasher = Hasher().text(f"head-{HEAD_VERSION}").text(sklearn.__version__)
    hasher.value(asdict(replace(options, mode="on"))).texts(list(exemplars.experts))
    hasher.array(exemplars.vectors).array(exemplars.targets)
    if validation is not None:
        hasher.array(validation.vectors).array(validation.targets)
    return hasher.hexdigest()


def _store(cache: ArrayCache, key: str, fitted: FittedHead) -> None:
    report = asdict(fitted.report)
    meta = {
        "has_none": fitted.head.linear.has_none,
        "threshold": fitted.threshold,
        "margin": fitted.margin,
        "report": report,
    }
    arrays = {"weights": fitted.head.linear.weights, "bias": fitted.head.linear.bias}
    cache.store(key, arrays, meta)


def _load(cache: ArrayCache, key: str) -> FittedHead | None:
    entry = cache.load(key)
    if entry is None:
        return None
    arrays, meta = entry
    try:
        report = dict(meta["report"])  # type: ignore[call-overload]
        point = OperatingPoint(**report.pop("point"))
        mix_of = dict(report.pop("mix"))
        gate = Gate(**mix_of.pop("gate"))
        mix = Combination(**mix_of, gate=gate)
        linear = LinearHead(
            np.asarray(arrays["weights"], np.float32),
            np.asarray(arrays["bias"], np.float32),
            bool(meta["has_none"]),
        )
        loaded = FitReport(**{**report, "cached": True}, point=point, mix=mix)
        threshold, margin = float(meta["threshold"]), float(meta["margin"])  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError) as exc:
        logger.warning("cached head ignored", extra={"error": str(exc)})
        return None
    return FittedHead(ProbabilityHead(linear, mix), threshold, margin, loaded)
