"""Decode throughput of the dynamic logit fusion decoder, on CPU by default.

    .venv/bin/python benchmarks/fusion_bench.py [--batches 1 16] [--steps 32] [--repeats 1]

Members: the large model is the real SmolLM2-135M-Instruct (converted into the model cache,
`$TASKGATE_HOME` or ~/.cache/taskgate); the small base and the task expert are random
Llama models with SmolLM2's vocabulary (hidden 256, 4 layers: about a seventh of the large
model's per-token compute). Speed does not depend on what the weights say.

For each batch size (rows of different prompt lengths, greedy, no early stop) it measures,
all in the same engine (`BatchDecoder`, continuous batching, one KV cache per member):

* fused        the three members with the default `bracketed` solver (and `grid`, `static`);
* large alone  the large model decoded by itself;
* bound        the sum, over the three members, of each one's forward time per step when run
               alone with its KV cache: what fusion would cost if it added nothing.

ms/step is decode wall time (prefill excluded) per step; tokens/s counts every row's token.
The solver's share is the time inside the solver over the fused step time. Prints a table
and writes JSON (benchmarks/results/fusion_bench.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from experts.fusion.decoder import BatchDecoder, Combiner, FusionCombiner, PhaseClock, PlainCombiner
from experts.fusion.members import CausalLMMember
from experts.fusion.rows import Row, RowPlan
from experts.fusion.solvers import build_solver
from experts.fusion.vocab import SharedVocab
from experts.weights import resolve_model

REPO = Path(__file__).resolve().parents[1]
LARGE = "builtin:SmolLM2-135M-Instruct"
QUESTIONS = [
    "Name three colours of the rainbow.",
    "What is the capital of France?",
    "Write a haiku about autumn leaves falling on a quiet pond.",
    "hi",
    "Explain recursion to a five year old in two sentences.",
    "List the planets of the solar system in order from the sun.",
    "Translate 'good morning' into Spanish.",
    "Why is the sky blue?",
]
SOLVERS = ("bracketed", "grid", "static")


@dataclass(frozen=True)
class Run:
    ms_per_step: float
    tokens_per_s: float
    phases_ms: dict[str, float]  # per step


@dataclass(frozen=True)
class Bench:
    large: torch.nn.Module
    small: torch.nn.Module
    expert: torch.nn.Module
    vocab: SharedVocab
    detokenize: Callable[[list[int]], str]
    prompts: list[tuple[int, ...]]


def small_model(vocab_size: int, seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def prepare(cache_dir: Path) -> Bench:
    path = resolve_model(LARGE, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    large = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    size = len(tokenizer)
    prompts = []
    for question in QUESTIONS * 4:
        messages = [{"role": "user", "content": question}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompts.append(tuple(tokenizer.encode(text, add_special_tokens=False)))
    return Bench(
        large=large,
        small=small_model(size, seed=1),
        expert=small_model(size, seed=2),
        vocab=SharedVocab(size=size, mask=None, digest=""),
        detokenize=lambda ids: str(tokenizer.decode(ids, skip_special_tokens=True)),
        prompts=prompts,
    )


def decode(
    bench: Bench, modules: Sequence[torch.nn.Module], combiner: Combiner, clock: PhaseClock,
    batch: int, steps: int,
) -> float:  # fmt: skip
    """Decode `batch` rows for `steps` steps; the decode wall time in seconds."""
    members = [CausalLMMember(module) for module in modules]
    decoder = BatchDecoder(members, combiner, max_batch=batch, clock=clock)
    for prompt in bench.prompts[:batch]:
        row = Row(
            RowPlan(prompt, steps),
            lambda event: None,
            detokenize=bench.detokenize,
            eos_ids=frozenset(),
            experts=max(combiner.experts, 1),
            device=torch.device("cpu"),
        )
        decoder.submit(row)
    started = time.perf_counter()
    decoder.run_until_idle()
    return time.perf_counter() - started - clock.seconds["prefill"]


def measure(
    bench: Bench, modules: Sequence[torch.nn.Module], solver: str | None, batch: int,
    steps: int, repeats: int,
) -> Run:  # fmt: skip
    """The median of `repeats` runs, after a short warm-up."""
    runs: list[Run] = []
    for attempt in range(repeats + 1):
        clock = PhaseClock()
        combiner: Combiner = PlainCombiner()
        if solver is not None:
            combiner = FusionCombiner(build_solver(solver), bench.vocab, 1, clock=clock)
        length = 4 if attempt == 0 else steps
        seconds = decode(bench, modules, combiner, clock, batch, length)
        if attempt:
            phases = {
                name: 1000 * value / (clock.counts[name] if name == "forward" else length)
                for name, value in clock.seconds.items()
                if name != "prefill"
            }
            runs.append(Run(1000 * seconds / length, batch * length / seconds, phases))
    middle = sorted(runs, key=lambda run: run.ms_per_step)[len(runs) // 2]
    return middle


def rows_for(bench: Bench, batch: int, steps: int, repeats: int) -> list[dict[str, object]]:
    members = {"large": bench.large, "small_base": bench.small, "expert": bench.expert}
    rows: list[dict[str, object]] = []
    large = measure(bench, [bench.large], None, batch, steps, repeats)
    for solver in SOLVERS:
        fused = measure(bench, list(members.values()), solver, batch, steps, repeats)
        solve = fused.phases_ms.get("solve", 0.0)
        rows.append(row(batch, f"fused ({solver})", fused.ms_per_step, large.ms_per_step, solve))
        rows[-1]["phases_ms"] = {k: round(v, 3) for k, v in fused.phases_ms.items()}
    rows.append(row(batch, "large alone", large.ms_per_step, large.ms_per_step, None))
    alone = {
        name: measure(bench, [module], None, batch, steps, repeats).phases_ms["forward"]
        for name, module in members.items()
    }
    rows.append(row(batch, "bound", sum(alone.values()), large.ms_per_step, None))
    rows[-1]["members_ms"] = {name: round(value, 3) for name, value in alone.items()}
    return rows


def row(
    batch: int, decoder: str, ms: float, large_ms: float, solve_ms: float | None
) -> dict[str, object]:
    return {
        "batch": batch,
        "decoder": decoder,
        "ms_per_step": round(ms, 2),
        "tokens_per_s": round(batch * 1000 / ms, 1),
        "x_large": round(ms / large_ms, 2),
        "solver_ms_per_step": None if solve_ms is None else round(solve_ms, 2),
        "solver_share": None if solve_ms is None else round(solve_ms / ms, 3),
    }


def table(rows: list[dict[str, object]]) -> str:
    head = ["batch", "decoder", "ms/step", "tokens/s", "vs large", "solver ms/step", "solver share"]
    keys = ["batch", "decoder", "ms_per_step", "tokens_per_s", "x_large"]
    keys += ["solver_ms_per_step", "solver_share"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in rows:
        cells = ["" if entry[key] is None else str(entry[key]) for key in keys]
        if entry["solver_share"] is not None:
            cells[-1] = f"{100 * float(str(entry['solver_share'])):.1f}%"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "fusion_bench.json"
    )
    args = parser.parse_args(argv)
    home = os.environ.get("TASKGATE_HOME")
    cache = args.cache_dir or (Path(home) if home else Path.home() / ".cache" / "taskgate")
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = prepare(cache)
    rows: list[dict[str, object]] = []
    with torch.inference_mode():
        for batch in args.batches:
            rows += rows_for(bench, batch, args.steps, args.repeats)
            print(f"batch {batch} done", flush=True)
    print()
    print(table(rows))
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "dtype": "float32",
        "large": LARGE,
        "small_base_and_expert": "random Llama, hidden 256, 4 layers, SmolLM2 vocabulary",
        "steps": args.steps,
        "repeats": args.repeats,
        "when": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
