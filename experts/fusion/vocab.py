"""One vocabulary for every member: refuse models whose tokenizers differ.

Tokenizers are compared by a hash of their token-to-id map. They may differ only by ids
appended at the end (a model's extra added tokens, or an output layer padded past the
tokenizer): fusion then works on the shared ids, the extra ones are sliced off every
model's logits and can never be produced, and holes among the shared ids are masked to
-inf.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch


class VocabMismatch(ValueError):
    """The members' tokenizers cannot be fused."""


@dataclass(frozen=True, slots=True)
class MemberVocab:
    """What fusion needs to know about one member's vocabulary."""

    label: str  # how errors name the member: "large", "small_base", "expert 'code'"
    tokens: Mapping[str, int]  # the tokenizer's token -> id map
    width: int  # the number of logits the model produces
    digest: str  # vocab_digest(tokens)

    @classmethod
    def of(cls, label: str, tokens: Mapping[str, int], width: int) -> MemberVocab:
        return cls(label, dict(tokens), width, vocab_digest(tokens))


@dataclass(frozen=True, slots=True)
class SharedVocab:
    """The ids fusion decodes over: logits are sliced to `size`; `mask` (if any) marks the
    shared ids among them (False: never produced)."""

    size: int
    mask: torch.Tensor | None
    digest: str

    def to(self, device: torch.device) -> SharedVocab:
        mask = None if self.mask is None else self.mask.to(device)
        return SharedVocab(self.size, mask, self.digest)

    def allows(self, token_ids: Sequence[int]) -> bool:
        """Whether every id is one all members share (a prompt must be)."""
        if any(not 0 <= token < self.size for token in token_ids):
            return False
        if self.mask is None or not token_ids:
            return True
        return bool(self.mask.cpu()[list(token_ids)].all())


def vocab_digest(tokens: Mapping[str, int]) -> str:
    """A stable hash of a token -> id map."""
    payload = json.dumps(sorted(tokens.items(), key=lambda item: item[1]), ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def shared_vocab(members: Sequence[MemberVocab]) -> SharedVocab:
    """The common vocabulary, or `VocabMismatch` naming the first pair that differs."""
    if not members:
        raise VocabMismatch("no models to fuse")
    base = min(members, key=lambda member: len(member.tokens))  # the first of the smallest
    for member in members:
        if member.digest != base.digest:
            _check_extends(base, member)
    size = max(base.tokens.values(), default=-1) + 1
    for member in members:
        if member.width < size:
            message = (
                f"{member.label} produces {member.width} logits, fewer than the "
                f"{size} ids of the shared vocabulary"
            )
            raise VocabMismatch(message)
    mask: torch.Tensor | None = None
    if len(set(base.tokens.values())) < size:
        mask = torch.zeros(size, dtype=torch.bool)
        mask[list(base.tokens.values())] = True
    return SharedVocab(size=size, mask=mask, digest=base.digest)


def _check_extends(base: MemberVocab, other: MemberVocab) -> None:
    """`other` must hold every token of `base` at the same id, its extras appended after."""

    def differ(detail: str) -> VocabMismatch:
        return VocabMismatch(
            f"tokenizers differ: {base.label} (vocab hash {base.digest}, {len(base.tokens)} "
            f"tokens) vs {other.label} (vocab hash {other.digest}, {len(other.tokens)} "
            f"tokens): {detail}"
        )

    for token, index in base.tokens.items():
        theirs = other.tokens.get(token)
        if theirs != index:
            where = "missing" if theirs is None else f"id {theirs}"
            raise differ(f"token {token!r} is id {index} in one and {where} in the other")
    end = max(base.tokens.values(), default=-1)
    extras = sorted(index for token, index in other.tokens.items() if token not in base.tokens)
    if extras and extras[0] <= end:
        raise differ(f"extra ids must come after id {end}, but id {extras[0]} does not")
