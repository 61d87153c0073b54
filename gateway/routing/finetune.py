"""`taskgate fit`: fine-tune the embedder on the exemplars, offline, on a CPU in minutes.

The recipe is metric learning with one learnable proxy per expert (a cosine classifier
with an additive margin, "CosFace"): every exemplar is pulled towards its expert's proxy
and pushed from the others, so exemplars of one expert cluster tightly on the sphere and
the routing head (and the similarity evidence) separate experts better. Negative
examples (out of scope), when given, are pushed away from every proxy (outlier
exposure: their distribution over experts is driven towards uniform). The proxies are
thrown away; the artifact is a plain sentence-transformers directory that
`embedder.model` can point to.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

ARTIFACT_META = "taskgate_fit.json"
RECIPE_VERSION = "cosface-oe-1"
Progress = Callable[[int, int, float], None]


@dataclass(frozen=True, slots=True)
class FinetuneOptions:
    epochs: float = 4.0
    batch_size: int = 64
    learning_rate: float = 5e-5
    proxy_learning_rate: float = 1e-2
    scale: float = 30.0
    margin: float = 0.2
    # Negative examples mixed into every batch, and the weight of their loss.
    negatives_per_batch: int = 8
    negative_weight: float = 0.5
    warmup: float = 0.06
    seed: int = 0


@dataclass(frozen=True, slots=True)
class FinetuneReport:
    out: Path
    examples: int
    experts: int
    negatives: int
    steps: int
    seconds: float


def finetune(
    base: Path,
    texts: Sequence[str],
    labels: Sequence[str],
    negatives: Sequence[str],
    out: Path,
    options: FinetuneOptions = FinetuneOptions(),
    progress: Progress | None = None,
) -> FinetuneReport:
    """Fine-tune the sentence-transformers model at `base`; write the result to `out`."""
    import torch
    from sentence_transformers import SentenceTransformer

    if len(texts) != len(labels) or not texts:
        raise ValueError("finetune needs as many labels as texts, and at least one text")
    random.seed(options.seed)
    torch.manual_seed(options.seed)
    model = SentenceTransformer(str(base), device="cpu")
    experts = sorted(set(labels))
    targets = torch.tensor([experts.index(label) for label in labels])
    proxies = torch.nn.Parameter(_initial_proxies(model, texts, targets, len(experts)))
    optimizer = torch.optim.AdamW(
        [
            {"params": model.parameters(), "lr": options.learning_rate},
            {"params": [proxies], "lr": options.proxy_learning_rate, "weight_decay": 0.0},
        ]
    )
    steps = max(1, int(options.epochs * len(texts) / options.batch_size))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_decay(steps, options.warmup))
    started = time.monotonic()
    model.train()
    order: list[int] = []
    for step in range(steps):
        if len(order) < options.batch_size:
            order += random.sample(range(len(texts)), len(texts))
        batch, order = order[: options.batch_size], order[options.batch_size :]
        shown = random.sample(list(negatives), min(options.negatives_per_batch, len(negatives)))
        loss = _loss(model, proxies, [texts[i] for i in batch], targets[batch], shown, options)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        schedule.step()
        if progress is not None:
            progress(step + 1, steps, float(loss.detach()))
    model.eval()
    seconds = time.monotonic() - started
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    meta = {
        "recipe": RECIPE_VERSION,
        "base": str(base.name),
        "examples": len(texts),
        "experts": len(experts),
        "negatives": len(negatives),
        "steps": steps,
        "seconds": round(seconds, 1),
        "options": asdict(options),
    }
    (out / ARTIFACT_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return FinetuneReport(out, len(texts), len(experts), len(negatives), steps, seconds)


def _initial_proxies(
    model: SentenceTransformer, texts: Sequence[str], targets: torch.Tensor, n: int
) -> torch.Tensor:
    """Each expert's proxy starts at the mean of its exemplars' (frozen) embeddings."""
    import torch

    vectors = np.asarray(
        model.encode(list(texts), batch_size=128, convert_to_numpy=True, show_progress_bar=False)
    )
    embedded = torch.nn.functional.normalize(torch.from_numpy(vectors).float(), dim=-1)
    return torch.stack([embedded[targets == k].mean(0) for k in range(n)])


def _warmup_decay(steps: int, warmup: float) -> Callable[[int], float]:
    ramp = max(1.0, warmup * steps)

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / ramp) * max(0.0, (steps - step) / steps)

    return factor


def _embed(model: SentenceTransformer, texts: Sequence[str]) -> torch.Tensor:
    import torch

    prepare = getattr(model, "preprocess", None) or model.tokenize
    features = prepare(list(texts))
    output: torch.Tensor = model(features)["sentence_embedding"]
    return torch.nn.functional.normalize(output, dim=-1)


def _loss(
    model: SentenceTransformer,
    proxies: torch.Tensor,
    texts: list[str],
    targets: torch.Tensor,
    negatives: list[str],
    options: FinetuneOptions,
) -> torch.Tensor:
    """CosFace on the exemplars; on the negatives, cross-entropy towards uniform."""
    import torch
    import torch.nn.functional as F

    embedded = _embed(model, texts + negatives)
    cosines = embedded @ F.normalize(proxies, dim=-1).T
    own = cosines[: len(texts)].clone()
    own[torch.arange(len(texts)), targets] -= options.margin
    loss = F.cross_entropy(options.scale * own, targets)
    if negatives:
        outside = (options.scale * cosines[len(texts) :]).log_softmax(-1)
        loss = loss + options.negative_weight * (-outside.mean(-1)).mean()
    return loss
