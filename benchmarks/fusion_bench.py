"""Decode throughput of the dynamic logit fusion decoder: CPU preset, and GPU preset.

    .venv/bin/python benchmarks/fusion_bench.py [--batches 1 16] [--steps 32] [--repeats 1]
    python3 benchmarks/fusion_bench.py --preset gpu [--check] [--steps 64] [--repeats 3]

**CPU preset** (default without CUDA). Members: the large model is the real
SmolLM2-135M-Instruct (converted into the model cache, `$TASKGATE_HOME` or
~/.cache/taskgate); the small base and the task expert are random Llama models with
SmolLM2's vocabulary (hidden 256, 4 layers: about a seventh of the large model's per-token
compute). Speed does not depend on what the weights say.

For each batch size (rows of different prompt lengths, greedy, no early stop) it measures,
all in the same engine (`BatchDecoder`, continuous batching, one KV cache per member):

* fused        the three members with the default `bracketed` solver (and `grid`, `static`);
* large alone  the large model decoded by itself;
* bound        the sum, over the three members, of each one's forward time per step when run
               alone with its KV cache: what fusion would cost if it added nothing.

ms/step is decode wall time (prefill excluded) per step; tokens/s counts every row's token.
The solver's share is the time inside the solver over the fused step time. Prints a table
and writes JSON (benchmarks/results/fusion_bench.json).

**GPU preset** (`--preset gpu`, the default with CUDA). Randomly initialised bf16 Llama
members built on the GPU (no weights travel): a large model (hidden 2048, 16 layers, 32
heads, MLP 8192, vocab 49152, about 1.17B parameters with tied embeddings) and four small
ones (hidden 768, 12 layers, 12 heads, MLP 3072, same vocabulary, about 151M each): one
small base and three experts, bracketed solver. At each batch size it measures, side by
side on the one card, the large model alone and the fusion, in three engines:

* dynamic   `DynamicMembers`: transformers' dynamic caches, every member called eagerly;
* static    `StaticMembers` with graphs off: static caches, eager kernels;
* graphs    `StaticMembers` on CUDA: every step replayed as CUDA graphs;
* compiled  the same, with the combiner compiled by torch.compile before capture.

Each engine decodes the batch once untimed (graph capture, allocator warm-up), then
`--repeats` times timed; the median is reported. Rows start with random prompts of 16-80
tokens, so they are left-padded to each other. "vs large" divides by the large model alone
in the same engine. `--check` first decodes rows that join and leave mid-way (more rows
than `max_batch`) with graphs and with eager steps and requires the same tokens (bf16:
graphs against the static engine's eager steps, the same kernels; float32: graphs against
the dynamic engine). Writes benchmarks/results/fusion_bench_gpu.json.

Only torch and transformers are needed on the GPU machine.
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
from experts.fusion.static import DynamicMembers, MemberSet, StaticMembers
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
    parser.add_argument("--preset", choices=["cpu", "gpu"], default=None)
    parser.add_argument("--check", action="store_true", help="GPU: graphs give eager's tokens")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    parser.add_argument("--device", default="cuda", help="GPU preset: the device (cuda, cuda:1)")
    parser.add_argument("--tiny", action="store_true", help="GPU preset: tiny members (dry run)")
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "fusion_bench.json"
    )
    args = parser.parse_args(argv)
    preset = args.preset or ("gpu" if torch.cuda.is_available() else "cpu")
    if preset == "gpu":
        return gpu_main(args)
    args.batches = args.batches or [1, 16]
    args.steps = args.steps or 32
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


# -- the GPU preset --------------------------------------------------------------------------

ENGINES = ("dynamic", "static", "graphs", "compiled")
VOCAB_GPU = 49152
# (hidden, layers, heads): the large model and small members; `--tiny` for a dry
# run of this code path on any device.
LARGE_SHAPE, SMALL_SHAPE, TINY_SHAPE = (2048, 16, 32), (768, 12, 12), (64, 2, 4)


@dataclass(frozen=True)
class Card:
    device: torch.device
    tiny: bool

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def model(
        self, shape: tuple[int, int, int], seed: int, dtype: torch.dtype, spread: float = 0.02
    ) -> torch.nn.Module:
        """A random Llama; a large `spread` (initialiser std) makes its logits decisive, so
        greedy choices do not hinge on rounding (for the exact check)."""
        hidden, layers, heads = TINY_SHAPE if self.tiny else shape
        config = LlamaConfig(
            vocab_size=VOCAB_GPU, hidden_size=hidden, intermediate_size=4 * hidden,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
            max_position_embeddings=4096, tie_word_embeddings=True, initializer_range=spread,
        )  # fmt: skip
        torch.manual_seed(seed)
        with self.device:
            model = LlamaForCausalLM(config)
        return model.to(dtype).eval()

    def members(self, dtype: torch.dtype) -> list[torch.nn.Module]:
        """Large, small base, three experts."""
        large = self.model(LARGE_SHAPE, 0, dtype)
        return [large] + [self.model(SMALL_SHAPE, 1 + k, dtype) for k in range(4)]


class RecordedRow(Row):
    """A row that keeps its tokens (to compare engines)."""

    def __init__(self, prompt: tuple[int, ...], steps: int, experts: int, device: torch.device):
        super().__init__(
            RowPlan(prompt, steps), lambda event: None, detokenize=lambda ids: "",
            eos_ids=frozenset(), experts=experts, device=device,
        )  # fmt: skip
        self.tokens: list[int] = []

    def advance(self, token: int, alphas: Sequence[float]) -> bool:
        self.tokens.append(token)
        return super().advance(token, alphas)


def member_set(
    engine: str, modules: Sequence[torch.nn.Module], rows: int, length: int, card: Card
) -> MemberSet:
    if engine == "dynamic":
        return DynamicMembers.of(modules)
    graphs = engine in ("graphs", "compiled") and card.device.type == "cuda"
    return StaticMembers(
        modules, max_rows=rows, max_len=length, graphs=graphs, compile_combiner=engine == "compiled"
    )


def combiner_for(modules: Sequence[torch.nn.Module]) -> Combiner:
    if len(modules) == 1:
        return PlainCombiner()
    vocab = SharedVocab(size=VOCAB_GPU, mask=None, digest="")
    return FusionCombiner(build_solver("bracketed"), vocab, len(modules) - 2)


def random_prompts(count: int, seed: int) -> list[tuple[int, ...]]:
    """Prompts of 16-80 random ids."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(16, 81, (count,), generator=generator).tolist()
    return [tuple(torch.randint(3, VOCAB_GPU, (n,), generator=generator).tolist()) for n in lengths]


def timed_decode(
    members: MemberSet, combiner: Combiner, prompts: Sequence[tuple[int, ...]], steps: int,
    max_batch: int, card: Card,
) -> tuple[float, list[list[int]]]:  # fmt: skip
    """Decode every prompt for `steps` tokens: (seconds after the first step, the tokens).

    Timing starts once the first `max_batch` rows are admitted and have taken one step, so
    it covers steady decoding (and any later joins), not the first prefills.
    """
    decoder = BatchDecoder(members, combiner, max_batch=max_batch)
    experts = max(combiner.experts, 1)
    rows = [RecordedRow(prompt, steps, experts, card.device) for prompt in prompts]
    for row in rows:
        decoder.submit(row)
    decoder.iterate()
    card.sync()
    started = time.perf_counter()
    decoder.run_until_idle()
    card.sync()
    return time.perf_counter() - started, [row.tokens for row in rows]


def gpu_measure(
    engine: str, modules: Sequence[torch.nn.Module], batch: int, steps: int, repeats: int,
    card: Card,
) -> dict[str, object]:  # fmt: skip
    """Median ms/step of `repeats` timed decodes after one untimed (capture, warm-up)."""
    prompts = random_prompts(batch, seed=batch)
    members = member_set(engine, modules, batch, 80 + steps + 1, card)
    combiner = combiner_for(modules)
    timed_decode(members, combiner, prompts, steps, batch, card)
    times = sorted(
        timed_decode(members, combiner, prompts, steps, batch, card)[0] for _ in range(repeats)
    )
    ms = 1000 * times[len(times) // 2] / (steps - 1)
    result: dict[str, object] = {
        "batch": batch, "engine": engine,
        "decoder": "large alone" if len(modules) == 1 else f"fused ({len(modules)} models)",
        "ms_per_step": round(ms, 3), "tokens_per_s": round(batch * 1000 / ms, 1),
    }  # fmt: skip
    if isinstance(members, StaticMembers):
        result["graphs_captured"] = members.captured
    return result


def gpu_check(
    modules: Sequence[torch.nn.Module], reference: str, dtype: torch.dtype, card: Card
) -> dict[str, object]:
    """10 rows, at most 4 at a time (so rows join and leave mid-way), 24 tokens each:
    the graphs engine against `reference`."""
    prompts = random_prompts(10, seed=7)
    tokens = {}
    for engine in ("graphs", reference):
        members = member_set(engine, modules, 4, 80 + 24 + 1, card)
        tokens[engine] = timed_decode(members, combiner_for(modules), prompts, 24, 4, card)[1]
    same = sum(a == b for a, b in zip(tokens["graphs"], tokens[reference], strict=True))
    dtype_name = str(dtype).removeprefix("torch.")
    return {"dtype": dtype_name, "against": reference, "rows": len(prompts), "same": same}


def gpu_main(args: argparse.Namespace) -> int:
    import transformers

    card = Card(torch.device(args.device), args.tiny)
    if card.device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--preset gpu needs CUDA (or --device cpu --tiny for a dry run)")
    batches, steps = args.batches or [1, 32], args.steps or 64
    name = torch.cuda.get_device_name(card.device) if card.device.type == "cuda" else "cpu"
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    print(f"{name}; {versions}", flush=True)
    checks: list[dict[str, object]] = []
    rows: list[dict[str, object]] = []
    with torch.inference_mode():
        if args.check:
            exact = [card.model(TINY_SHAPE, k, torch.float32, spread=0.5) for k in range(5)]
            checks.append(gpu_check(exact, "dynamic", torch.float32, card))
            del exact
        modules = card.members(torch.bfloat16)
        if args.check:
            checks.append(gpu_check(modules, "static", torch.bfloat16, card))
        for check in checks:
            print(f"check: graphs and {check['against']} agree on {check['same']} of "
                  f"{check['rows']} rows ({check['dtype']})", flush=True)  # fmt: skip
        sizes = [sum(p.numel() for p in m.parameters()) for m in modules[:2]]
        for batch in batches:
            for engine in args.engines:
                large = gpu_measure(engine, modules[:1], batch, steps, args.repeats, card)
                fused = gpu_measure(engine, modules, batch, steps, args.repeats, card)
                ratio = float(str(fused["ms_per_step"])) / float(str(large["ms_per_step"]))
                fused["x_large"] = round(ratio, 2)
                rows += [large, fused]
                print(f"batch {batch}, {engine}: large {large['ms_per_step']} ms/step, "
                      f"fused {fused['ms_per_step']} ms/step", flush=True)  # fmt: skip
    head = ["batch", "engine", "decoder", "ms/step", "tokens/s", "vs large"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in rows:
        cells = [entry[k] for k in ("batch", "engine", "decoder", "ms_per_step", "tokens_per_s")]
        lines.append("| " + " | ".join(map(str, [*cells, entry.get("x_large", "")])) + " |")
    print("\n" + "\n".join(lines))
    meta = {
        "card": name, "versions": versions, "dtype": "bfloat16", "tiny": card.tiny,
        "large_parameters": sizes[0], "small_parameters": sizes[1],
        "members": "large, small base, 3 experts", "solver": "bracketed", "steps": steps,
        "repeats": args.repeats, "when": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    out = args.out
    if out.name == "fusion_bench.json":
        out = out.with_name("fusion_bench_gpu_tiny.json" if card.tiny else "fusion_bench_gpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "checks": checks, "results": rows}, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 1 if any(check["same"] != check["rows"] for check in checks) else 0


if __name__ == "__main__":
    raise SystemExit(main())
