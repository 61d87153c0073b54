"""Loading a fusion's members: resolve each reference, load each distinct model once, put
them on one device in one dtype, and check that they share one vocabulary.

Blocking (reads weights, may convert a builtin model on first use): call from a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from experts.fusion.static import DynamicMembers, MemberSet, StaticMembers
from experts.fusion.vocab import MemberVocab, SharedVocab, shared_vocab
from experts.prompting import DTYPES, ChatTokenizer, eos_ids
from experts.specs import FusionSpec
from experts.weights import ModelUnavailable, resolve_model

logger = logging.getLogger(__name__)

GGUF_SUFFIX = ".gguf"


class FusionTokenizer(ChatTokenizer, Protocol):
    """The part of a transformers tokenizer fusion uses."""

    def get_vocab(self) -> dict[str, int]: ...


@dataclass(frozen=True, slots=True)
class LoadedFusion:
    """The members in decoding order (large, small base, experts), ready to decode."""

    tokenizer: FusionTokenizer  # the large model's: chat template and detokenisation
    modules: tuple[torch.nn.Module, ...]
    vocab: SharedVocab
    eos_ids: frozenset[int]
    device: torch.device
    dtype: torch.dtype

    def describe(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        return f"{len(self.modules)} models on {self.device.type}/{dtype}, vocab {self.vocab.size}"

    def member_set(
        self, engine: str, max_rows: int, max_len: int, compile_combiner: bool = False
    ) -> MemberSet:
        """The members as the decoder steps them: `engine` auto, dynamic or static."""
        if engine == "static" or (engine == "auto" and self.device.type == "cuda"):
            return StaticMembers(
                self.modules, max_rows=max_rows, max_len=max_len, compile_combiner=compile_combiner
            )
        return DynamicMembers.of(self.modules)


@dataclass(frozen=True, slots=True)
class _Model:
    module: torch.nn.Module
    tokenizer: FusionTokenizer


def pick_device(requested: str) -> torch.device:
    """cuda when present (or asked for), else cpu; ValueError when cuda is asked but absent."""
    cuda = torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        raise ValueError("device 'cuda' requested but CUDA is unavailable")
    return torch.device("cuda" if cuda and requested != "cpu" else "cpu")


def load_fusion(spec: FusionSpec, cache_dir: Path) -> LoadedFusion:
    """Load every member; raises ModelUnavailable or ValueError (VocabMismatch) on failure."""
    device = pick_device(spec.device)
    dtype = DTYPES.get(spec.dtype, torch.bfloat16 if device.type == "cuda" else torch.float32)
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    roles = [("large", spec.large), ("small_base", spec.small_base)]
    roles += [(f"expert {member.name!r}", member.model) for member in spec.experts]
    models: dict[Path, _Model] = {}
    chosen: list[_Model] = []
    for _, ref in roles:
        path = _resolve(ref, cache_dir)
        if path not in models:
            models[path] = _load(path, device, dtype)
        chosen.append(models[path])
    vocab = shared_vocab(_vocabs(roles, chosen))
    large = chosen[0]
    if not large.tokenizer.chat_template:
        raise ModelUnavailable(f"{spec.large} has no chat template")
    modules = tuple(model.module for model in chosen)
    eos = eos_ids(large.tokenizer, large.module)
    return LoadedFusion(large.tokenizer, modules, vocab, eos, device, dtype)


def _vocabs(roles: Sequence[tuple[str, str]], models: Sequence[_Model]) -> list[MemberVocab]:
    seen: dict[int, MemberVocab] = {}  # one hash per distinct model
    vocabs = []
    for (label, _), model in zip(roles, models, strict=True):
        known = seen.get(id(model))
        if known is None:
            known = seen[id(model)] = MemberVocab.of(
                label, model.tokenizer.get_vocab(), _width(model.module)
            )
        vocabs.append(known)
    return vocabs


def _width(module: torch.nn.Module) -> int:
    head = getattr(module, "get_output_embeddings", lambda: None)()
    features = getattr(head, "out_features", None)
    if isinstance(features, int):
        return features
    return int(getattr(getattr(module, "config", None), "vocab_size", 0))


def _resolve(ref: str, cache_dir: Path) -> Path:
    """A transformers model directory, or a `.gguf` file transformers can dequantise."""
    path = Path(ref).expanduser()
    if ref.endswith(GGUF_SUFFIX):
        if not path.is_file():
            raise ModelUnavailable(f"GGUF file {ref!r} does not exist")
        return path.resolve()
    return resolve_model(ref, cache_dir).resolve()


def _load(path: Path, device: torch.device, dtype: torch.dtype) -> _Model:
    """Tokenizer and model from a directory or a GGUF file (ModelUnavailable on failure)."""
    directory, options = path, dict[str, object](local_files_only=True)
    if path.is_file():
        directory, options["gguf_file"] = path.parent, path.name
    try:
        tokenizer = cast(FusionTokenizer, AutoTokenizer.from_pretrained(directory, **options))
        loaded = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, **options)
        module = cast(torch.nn.Module, loaded).to(device).eval()
    except Exception as exc:  # transformers/torch raise many kinds; all mean "cannot load"
        raise ModelUnavailable(f"cannot load {path.name}: {exc}") from exc
    logger.debug("fusion member loaded", extra={"action": "load", "detail": path.name})
    return _Model(module, tokenizer)
