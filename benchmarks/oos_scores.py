"""Out-of-scope scores compared on one embedder: which score separates "no expert" best.

    .venv/bin/python benchmarks/oos_scores.py [--data DIR] [--embedder REF] [--w 0 2 5]

The offline study behind the router's in-scope gate (`gateway.routing.head`), which
learns a weighting of these scores on held-out data; the scores here are fixed. Each train
label is an expert (`oos` rows are negatives), embedded by the gateway's embedder (its
defaults: int8 on ONNX Runtime where it can), and the same multinomial logistic regression
the router fits (`gateway.routing.head.fit_linear`, with its "none" column) picks the
expert. Only the out-of-scope score differs between rows:

* `max probability`: the head's best expert probability (what the router thresholded
  before the gate, without the similarity evidence mixed in);
* `energy`: log-sum-exp of the head's expert logits;
* `energy + w * cosine`: plus w times the best cosine to any exemplar;
* `max cosine`: the nearest exemplar alone.

For each score: in-scope accuracy (dispatched to the right expert) at 90% out-of-scope
recall with the threshold chosen on test (a reference for the curve), and the test figures
at thresholds chosen on val for out-of-scope recall 0.93 and 0.95 (operating points).
Prints a table and writes JSON (benchmarks/results/oos_scores.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OOS = "oos"
VAL_TARGETS = (0.93, 0.95)

Floats = NDArray[np.float64]


async def embed_splits(embedder_ref: str, splits: dict[str, list[str]]) -> dict[str, Floats]:
    from gateway.routing.embedder import SentenceTransformerEmbedder, resolve_embedder_path
    from gateway.settings import Settings

    embedder = SentenceTransformerEmbedder(
        resolve_embedder_path(embedder_ref),
        runtime="auto",
        onnx_dir=Settings.from_env().home / "router" / "onnx",
        cache_size=0,
    )
    await embedder.start()
    try:
        out = {}
        for name, texts in splits.items():
            parts = [await embedder.embed(texts[i : i + 512]) for i in range(0, len(texts), 512)]
            out[name] = np.concatenate(parts).astype(np.float64)
        print(f"embedder: {embedder_ref} ({embedder.precision}, {embedder.runtime})")
        return out
    finally:
        await embedder.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/clinc150_oos/jsonl")
    parser.add_argument("--embedder", default="builtin:all-MiniLM-L6-v2")
    parser.add_argument("--w", type=float, nargs="+", default=[2.0, 5.0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/oos_scores.json")
    args = parser.parse_args()

    from gateway.cli import pin_threads
    from gateway.evaluation import read_jsonl
    from gateway.routing.head import fit_linear

    pin_threads(None)
    rows = {s: read_jsonl(args.data / f"{s}.jsonl") for s in ("train", "val", "test")}
    experts = sorted({r.label for r in rows["train"]} - {OOS})
    index = {name: i for i, name in enumerate(experts)}
    labels = {s: np.array([index.get(r.label, -1) for r in rows[s]]) for s in rows}
    vectors = asyncio.run(embed_splits(args.embedder, {s: [r.text for r in rows[s]] for s in rows}))

    head = fit_linear(vectors["train"].astype(np.float32), labels["train"], len(experts), c=10.0)
    exemplars = vectors["train"][labels["train"] >= 0]

    def scores(split: str) -> tuple[NDArray[np.int64], dict[str, Floats]]:
        x = vectors[split]
        logits = (x @ head.weights + head.bias)[:, : len(experts)]
        top = logits.max(axis=1)
        energy = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
        log_probs = head.log_probs(x.astype(np.float32))
        cosine = (x @ exemplars.T).max(axis=1)
        named = {"max probability": log_probs[:, : len(experts)].max(axis=1).astype(np.float64)}
        named["energy"] = energy
        for w in args.w:
            named[f"energy + {w:g} * cosine"] = energy + w * cosine
        named["max cosine"] = cosine
        return logits.argmax(axis=1), named

    _, val_scores = scores("val")
    chosen, test_scores = scores("test")
    inside, inside_val = labels["test"] >= 0, labels["val"] >= 0
    right = chosen == labels["test"]

    def at(threshold: float, score: Floats) -> tuple[float, float]:
        dispatched = score > threshold
        accuracy = float((right & dispatched & inside).sum() / inside.sum())
        recall = float((~dispatched & ~inside).sum() / (~inside).sum())
        return round(accuracy, 4), round(recall, 3)

    table: list[dict[str, object]] = []
    lines = []
    for name, score in test_scores.items():
        reference, _ = at(float(np.quantile(score[~inside], 0.9)), score)
        row: dict[str, object] = {"score": name, "accuracy_at_test_oos_recall_0.9": reference}
        cells = [name, f"{reference:.4f}"]
        for target in VAL_TARGETS:
            held = val_scores[name][~inside_val]
            accuracy, recall = at(float(np.quantile(held, target)), score)
            row[f"val_oos_recall_{target:g}"] = [accuracy, recall]
            cells.append(f"{accuracy:.4f} / {recall:.3f}")
        table.append(row)
        lines.append("| " + " | ".join(cells) + " |")

    header = ["score", "in-scope acc. at 90% oos recall (test threshold)"]
    header += [f"val target {t:g}: in-scope / oos recall" for t in VAL_TARGETS]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"embedder": args.embedder, "rows": table}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
