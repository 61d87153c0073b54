"""Router accuracy on CLINC150: taskgate's router vs aurelio's semantic-router, side by side.

    .venv/bin/python benchmarks/router_bench.py [--data DIR] [--target oos_recall=0.95]
        [--finetuned DIR] [--latency-requests 1000]

Both routers get the same exemplars (CLINC150's train split: 150 intents x 100, plus its
100 out-of-scope rows), the same encoder (all-MiniLM-L6-v2 from the packaged directory,
no network) and one threshold tuned on the val split for the same target; figures are on
the test split (4500 in scope, 1000 out of scope).

* taskgate: `taskgate eval`'s code path (the gateway's head fitting and calibration;
  every test request routed alone through `ConversationRouter.route`). With
  `--finetuned DIR` (made by `taskgate fit --train ...`) a second row uses that embedder.
* semantic-router 1.1.1: `IndexedRouter` with its `HuggingFaceEncoder` on the same model
  directory, its default top-5 mean aggregation, Platt calibration fitted on val
  (`router.fit`), and a confidence threshold chosen on val for the same target.
  It lives in its own virtualenv under the cache dir (created once; PyPI is needed only
  then), which sees this one's torch and transformers.

"no threshold" is top-1 accuracy on the in-scope test requests. Latency is one request
routed alone, embedding included (BLAS on one thread for both). Prints a table and writes
JSON (benchmarks/results/router_bench.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEMANTIC_ROUTER = "semantic-router==1.1.1"
OOS = "oos"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = REPO.parent / "shared/data/clinc150_oos/jsonl"
    parser.add_argument("--data", type=Path, default=data)
    parser.add_argument("--target", default="oos_recall=0.95")
    parser.add_argument("--finetuned", type=Path, help="a `taskgate fit` embedder directory")
    parser.add_argument("--latency-requests", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/router_bench.json")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:  # inside semantic-router's virtualenv
        return _semantic_router_worker(args.worker)
    return _run(args)


# -- taskgate ----------------------------------------------------------------------------


def _taskgate(args: argparse.Namespace, embedder: str) -> dict[str, object]:
    sys.path.insert(0, str(REPO))
    from gateway.cli import _target, pin_threads
    from gateway.config import EmbedderConfig, RouterConfig
    from gateway.evaluation import evaluate, read_jsonl
    from gateway.settings import Settings

    pin_threads(None)
    router = RouterConfig().model_copy(update={"target": _target(args.target)})
    train, val, test = (read_jsonl(args.data / f"{s}.jsonl") for s in ("train", "val", "test"))
    result = asyncio.run(
        evaluate(train, test, val, embedder_ref=embedder, router_config=router,
                 embedder_config=EmbedderConfig(), cache_dir=Settings.from_env().home / "router")
    )  # fmt: skip
    inside = [o for o in result.outcomes if o.label != OOS]
    m = result.metrics
    return {
        "router": "taskgate",
        "embedder": "all-MiniLM-L6-v2" if embedder.startswith("builtin:") else Path(embedder).name,
        "no_threshold_accuracy": round(sum(o.best == o.label for o in inside) / len(inside), 4),
        "in_scope_accuracy": m["in_scope_accuracy"],
        "oos_recall": m["oos_recall"],
        "threshold": m["threshold"],
        "latency_ms": m["latency_ms"],
        "fit_seconds": m["fit_seconds"],
        "n_test": m["n_test"],
    }


# -- semantic-router, in its own virtualenv ----------------------------------------------


def _venv(home: Path) -> Path:
    """semantic-router's virtualenv, created once; it also sees this one's packages."""
    venv = home / "bench" / "semantic-router-1.1.1"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.is_file():
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = subprocess.run(
        [str(python), "-c", "import site; print(site.getsitepackages()[0])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    ours = subprocess.run(
        [sys.executable, "-c", "import site; print(site.getsitepackages()[0])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # Its own packages first; torch and transformers come from ours (listed after).
    Path(site, "zz_taskgate_venv.pth").write_text(ours + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", SEMANTIC_ROUTER], check=True)
    marker.write_text(SEMANTIC_ROUTER + "\n")
    return python


def _semantic_router(args: argparse.Namespace, home: Path, model: str) -> dict[str, object]:
    python = _venv(home)
    with tempfile.TemporaryDirectory() as folder:
        job = Path(folder) / "job.json"
        job.write_text(json.dumps({"data": str(args.data), "model": model,
                                   "latency_requests": args.latency_requests,
                                   "out": str(Path(folder) / "scores.json")}))  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        subprocess.run([str(python), __file__, "--worker", str(job)], check=True, env=env)
        scores = json.loads((Path(folder) / "scores.json").read_text())
    return _semantic_router_row(args, scores)


def _semantic_router_row(args: argparse.Namespace, scores: dict[str, object]) -> dict[str, object]:
    import numpy as np

    sys.path.insert(0, str(REPO))
    from gateway.cli import _target
    from gateway.routing.calibrate import Target, choose_point

    kind, value = _target(args.target).chosen()
    split = {name: scores[name] for name in ("val", "test")}

    def arrays(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = split[name]
        assert isinstance(rows, list)
        confidence = np.array([r["confidence"] for r in rows], dtype=np.float32)
        correct = np.array([r["route"] == r["label"] for r in rows])
        negative = np.array([r["label"] == OOS for r in rows])
        return confidence, correct, negative

    conf, correct, negative = arrays("val")
    zeros = np.zeros_like(conf)
    # The confidence is one number per request: no margin, only a threshold.
    point = choose_point(conf, zeros, correct, negative, Target(kind, value))
    conf, correct, negative = arrays("test")
    sent = conf >= point.threshold
    inside = ~negative
    latency = np.array(scores["latency_ms"], dtype=float)
    return {
        "router": "semantic-router 1.1.1",
        "embedder": "all-MiniLM-L6-v2",
        "no_threshold_accuracy": round(float(correct[inside].mean()), 4),
        "in_scope_accuracy": round(float((sent & correct)[inside].mean()), 4),
        "oos_recall": round(float((~sent)[negative].mean()), 4),
        "threshold": round(point.threshold, 6),
        "latency_ms": {
            "p50": round(float(np.percentile(latency, 50)), 3),
            "p99": round(float(np.percentile(latency, 99)), 3),
        },
        "fit_seconds": scores["fit_seconds"],
        "n_test": len(conf),
    }


def _semantic_router_worker(job_path: Path) -> int:
    """Runs in semantic-router's virtualenv: index, calibrate on val, score val and test."""
    import torch
    from semantic_router import IndexedRouter, Route
    from semantic_router.encoders import HuggingFaceEncoder
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    torch.set_num_threads(os.cpu_count() or 1)
    job = json.loads(job_path.read_text())

    def rows(name: str) -> list[dict[str, str]]:
        lines = Path(job["data"], f"{name}.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    train, val, test = rows("train"), rows("val"), rows("test")
    grouped: dict[str, list[str]] = {}
    for row in train:
        if row["label"] != OOS:
            grouped.setdefault(row["label"], []).append(row["text"])
    started = time.monotonic()
    router = IndexedRouter(
        encoder=HuggingFaceEncoder(name=job["model"]),
        routes=[Route(name=name, utterances=texts) for name, texts in grouped.items()],
    )
    router.fit([r["text"] for r in val], [None if r["label"] == OOS else r["label"] for r in val])
    fit_seconds = time.monotonic() - started

    def scored(split: list[dict[str, str]]) -> list[dict[str, object]]:
        out = []
        every = asyncio.run(router._scores_many([r["text"] for r in split]))
        for row, scores in zip(split, every, strict=True):
            best = max(scores, key=scores.__getitem__)
            confidence = router._probs(scores)[best]
            out.append({"label": row["label"], "route": best, "confidence": float(confidence)})
        return out

    latency = []
    for row in test[: job["latency_requests"]]:
        begun = time.perf_counter()
        router(row["text"])
        latency.append((time.perf_counter() - begun) * 1000)
    result = {"val": scored(val), "test": scored(test), "latency_ms": latency,
              "fit_seconds": round(fit_seconds, 3)}  # fmt: skip
    Path(job["out"]).write_text(json.dumps(result))
    return 0


# -- the table ---------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO))
    from gateway.routing.embedder import resolve_embedder_path
    from gateway.settings import Settings

    home = Settings.from_env().home
    model = str(resolve_embedder_path("builtin:all-MiniLM-L6-v2"))
    rows = [_taskgate(args, "builtin:all-MiniLM-L6-v2")]
    if args.finetuned is not None:
        rows.append(_taskgate(args, str(args.finetuned)))
    rows.append(_semantic_router(args, home, model))
    header = (f"| router | embedder | in-scope accuracy, no threshold | at one threshold tuned "
              f"on val ({args.target}): in-scope / out-of-scope recall | latency p50 / p99 (ms) "
              f"| fit (s) |")  # fmt: skip
    print(header)
    print("|---|---|---|---|---|---|")
    for row in rows:
        lat = row["latency_ms"]
        assert isinstance(lat, dict)
        embedder = Path(str(row["embedder"])).name
        print(f"| {row['router']} | {embedder} | {row['no_threshold_accuracy']:.3f} | "
              f"{row['in_scope_accuracy']:.3f} / {row['oos_recall']:.3f} | "
              f"{lat['p50']:.1f} / {lat['p99']:.1f} | {row['fit_seconds']} |")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"data": "CLINC150 (oos-eval, data_full)", "target": args.target,
              "cpu_count": os.cpu_count(), "rows": rows}  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
