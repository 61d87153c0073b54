"""Rendering `taskgate eval` results: the table, and the optional plot (matplotlib)."""

from __future__ import annotations

from pathlib import Path

from gateway.evaluation import EvalResult, confusions, threshold_curve


def table(result: EvalResult, title: str) -> str:
    m = result.metrics
    latency = m["latency_ms"]
    assert isinstance(latency, dict)
    rows = [
        ("in-scope accuracy", f"{m['in_scope_accuracy']:.4f}"),
        ("out-of-scope recall", _number(m["oos_recall"])),
        ("out-of-scope precision", _number(m["oos_precision"])),
        ("clarify rate", f"{m['clarify_rate']:.4f}"),
        ("macro F1", f"{m['macro_f1']:.4f}"),
        ("top-1 accuracy (no threshold)", f"{m['top1_accuracy']:.4f}"),
        ("in-scope accuracy at oos recall 0.9 *", _number(m["accuracy_at_oos_recall_0.9"])),
        ("latency p50 / p99 (ms)", f"{latency['p50']:.2f} / {latency['p99']:.2f}"),
        ("fit (s)", f"{m['fit_seconds']:.2f}" + (" (cached)" if m.get("fit_cached") else "")),
        ("test requests", str(m["n_test"])),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [title, describe(result), ""]
    lines += [f"| {'metric':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
    lines += ["", "* threshold chosen on this test set: a reference, not an operating point"]
    mistakes = confusions(result.outcomes, top=5)
    if mistakes:
        lines += ["", "most confused (true -> routed: count):"]
        lines += [f"  {truth} -> {got}: {count}" for truth, got, count in mistakes]
    return "\n".join(lines)


def _number(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "n/a (no oos in test)"


def describe(result: EvalResult) -> str:
    fit = result.fit
    if fit is None:
        return (
            f"no head (cosine similarity): threshold {result.threshold:.3f}, "
            f"margin {result.margin:.3f}"
        )
    gate = "learned" if fit.mix.gate.combined == 0 else "prior (no out-of-scope items)"
    return (
        f"head: logistic regression + similarity (gamma {fit.mix.gamma:g}), in-scope gate "
        f"{gate}, calibrated on {fit.held_out} ({fit.n_held_out} items) for {fit.target}: "
        f"threshold {result.threshold:.3f} (in-scope probability), margin {result.margin:.3f}"
    )


def plot(result: EvalResult, out: Path, title: str) -> None:
    """Two panels: the most-confused routes, and accuracy / oos recall over the threshold."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install 'taskgate[plot]'") from exc
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    mistakes = confusions(result.outcomes, top=15)
    names = [f"{truth} -> {got}" for truth, got, _ in mistakes][::-1]
    left.barh(names, [count for _, _, count in mistakes][::-1], color="#c0504d")
    left.set_title("most confused routes (true -> routed)")
    left.set_xlabel("test requests")
    left.tick_params(axis="y", labelsize=7)
    thresholds, accuracy, recall = threshold_curve(result.outcomes, result.margin)
    right.plot(thresholds, accuracy, label="in-scope accuracy")
    if result.metrics["oos_recall"] is not None:
        right.plot(thresholds, recall, label="out-of-scope recall")
    right.axvline(result.threshold, color="grey", linestyle="--", label="calibrated threshold")
    right.set_xlabel("threshold on the best score")
    right.set_ylim(0, 1.02)
    right.set_title(f"threshold sweep (margin {result.margin:.2f})")
    right.legend(loc="lower left")
    right.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)


def result_json(result: EvalResult, curve_points: int = 101) -> dict[str, object]:
    """The metrics with what a page needs to draw `plot`'s two panels: the most confused
    routes and the threshold sweep."""
    thresholds, accuracy, recall = threshold_curve(result.outcomes, result.margin, curve_points)
    has_oos = result.metrics["oos_recall"] is not None
    return {
        "object": "evaluation",
        "summary": describe(result),
        "metrics": result.metrics,
        "threshold": round(result.threshold, 6),
        "margin": round(result.margin, 6),
        "confusions": [
            {"label": truth, "routed": got, "count": count}
            for truth, got, count in confusions(result.outcomes, top=15)
        ],
        "curve": {
            "threshold": [round(t, 4) for t in thresholds],
            "in_scope_accuracy": [round(a, 4) for a in accuracy],
            "oos_recall": [round(r, 4) for r in recall] if has_oos else None,
        },
    }
