"""Member models behind one step interface, each with its own KV cache over the batch.

Every member sees the identical token stream. Rows join (a prefill, appended as the last
row) and leave (`keep`) between steps; in between, `step` runs one forward for every row.
A member stores its rows left-padded to one length, with an attention mask and explicit
positions, so rows of different lengths decode together; padding slots hold zeros.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Protocol

import torch
from transformers import DynamicCache

Tensor = torch.Tensor


class StepModel(Protocol):
    """One model of a fusion (or a plain decode): the decoder's only view of a member."""

    @property
    def rows(self) -> int: ...

    def prefill(self, token_ids: Sequence[int]) -> Tensor:
        """Append one row holding `token_ids`; its next-token logits, [1, V]."""
        ...

    def step(self, tokens: Tensor) -> Tensor:
        """Feed one token per row ([B], on the device); the next-token logits, [B, V]."""
        ...

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only these rows, in this order (the others finished)."""
        ...

    def reset(self) -> None:
        """Drop every row."""
        ...


class CausalLMMember:
    """A transformers causal LM (full attention, `DynamicCache`) as a `StepModel`.

    Several members may share one module (the same weights loaded once); each keeps its own
    cache. Forwards run under the caller's `torch.inference_mode()`.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self._model = model
        self._config = getattr(model, "config", None)
        self._cache_keyword = cache_keyword(model)
        self._keeps_last = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._device = next(model.parameters()).device
        if not all(type(layer).__name__ == "DynamicLayer" for layer in self._new_cache().layers):
            raise ValueError("only full-attention models are supported (no sliding windows)")
        self._cache: DynamicCache | None = None
        self._mask: Tensor | None = None  # [B, T], 1 for a token, 0 for padding

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def rows(self) -> int:
        return 0 if self._mask is None else int(self._mask.shape[0])

    def prefill(self, token_ids: Sequence[int]) -> Tensor:
        if not token_ids:
            raise ValueError("a row needs at least one token")
        cache = self._new_cache()
        ids = torch.tensor([list(token_ids)], dtype=torch.long, device=self._device)
        logits = self._forward(ids, cache, None, None)
        self._join(cache, len(token_ids))
        return logits

    def step(self, tokens: Tensor) -> Tensor:
        if self._cache is None or self._mask is None:
            raise RuntimeError("step() before any prefill()")
        self._mask = torch.cat([self._mask, torch.ones_like(self._mask[:, :1])], dim=1)
        positions = self._mask.sum(dim=1, keepdim=True) - 1
        return self._forward(tokens[:, None], self._cache, self._mask, positions)

    def keep(self, rows: Sequence[int]) -> None:
        if self._cache is None or self._mask is None:
            return
        if not rows:
            self.reset()
            return
        if list(rows) == list(range(self.rows)):
            return
        index = torch.tensor(list(rows), dtype=torch.long, device=self._device)
        mask = self._mask.index_select(0, index)
        start = leading_padding(mask)
        self._mask = mask[:, start:].contiguous()
        self._cache = self._rebuild(
            [(k.index_select(0, index)[:, :, start:], v.index_select(0, index)[:, :, start:])
             for k, v in cache_pairs(self._cache)]
        )  # fmt: skip

    def reset(self) -> None:
        self._cache, self._mask = None, None

    # -- internals -----------------------------------------------------------------------

    def _new_cache(self) -> DynamicCache:
        return DynamicCache(config=self._config)

    def _rebuild(self, pairs: list[tuple[Tensor, Tensor]]) -> DynamicCache:
        return DynamicCache(ddp_cache_data=pairs, config=self._config)

    def _forward(
        self, ids: Tensor, cache: DynamicCache, mask: Tensor | None, positions: Tensor | None
    ) -> Tensor:
        options: dict[str, object] = {self._cache_keyword: cache, "use_cache": True}
        if self._keeps_last:
            options["logits_to_keep"] = 1
        if mask is not None:
            options["attention_mask"] = mask
            options["position_ids"] = positions
        output = self._model(input_ids=ids, **options)
        logits: Tensor = output.logits[:, -1, :]
        return logits

    def _join(self, cache: DynamicCache, length: int) -> None:
        """Append a freshly prefilled row, left-padding whichever side is shorter."""
        row_mask = torch.ones((1, length), dtype=torch.long, device=self._device)
        if self._cache is None or self._mask is None:
            self._cache, self._mask = cache, row_mask
            return
        width = max(self._mask.shape[1], length)
        old_pad, new_pad = width - self._mask.shape[1], width - length
        pairs = [
            (torch.cat([_pad(k, old_pad), _pad(nk, new_pad)]),
             torch.cat([_pad(v, old_pad), _pad(nv, new_pad)]))
            for (k, v), (nk, nv) in zip(cache_pairs(self._cache), cache_pairs(cache), strict=True)
        ]  # fmt: skip
        self._mask = torch.cat(
            [torch.nn.functional.pad(self._mask, (old_pad, 0)),
             torch.nn.functional.pad(row_mask, (new_pad, 0))]
        )  # fmt: skip
        self._cache = self._rebuild(pairs)


def cache_keyword(module: torch.nn.Module) -> str:
    """The forward's name for the cache argument (`cache` in newer transformers)."""
    parameters = inspect.signature(module.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def leading_padding(mask: Tensor) -> int:
    """How many columns at the front of a [rows, columns] mask no row uses."""
    used = mask.any(dim=0)
    return int(used.to(torch.int8).argmax()) if bool(used.any()) else int(mask.shape[1])


def cache_pairs(cache: DynamicCache) -> list[tuple[Tensor, Tensor]]:
    """(keys, values) per layer of a filled dynamic cache, each [B, H, T, D]."""
    pairs = []
    for layer in cache.layers:
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor):
            raise RuntimeError(f"unexpected cache layer {type(layer).__name__}")
        pairs.append((keys, values))
    return pairs


def _pad(states: Tensor, count: int) -> Tensor:
    """Left-pad [B, H, T, D] key or value states with `count` zero positions."""
    return torch.nn.functional.pad(states, (0, 0, count, 0)) if count else states
