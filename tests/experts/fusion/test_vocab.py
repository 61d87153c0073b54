"""One vocabulary for every member: refused when tokenizers differ, sliced when extra ids
are appended at the end."""

from __future__ import annotations

import re

import pytest
import torch

from experts.fusion.vocab import MemberVocab, VocabMismatch, shared_vocab, vocab_digest

BASE = {"<s>": 0, "a": 1, "b": 2, "c": 3}


def member(label: str, tokens: dict[str, int], width: int | None = None) -> MemberVocab:
    return MemberVocab.of(label, tokens, width if width is not None else len(tokens))


def test_the_digest_depends_on_the_map_not_its_order() -> None:
    shuffled = dict(reversed(list(BASE.items())))
    assert vocab_digest(shuffled) == vocab_digest(BASE)
    assert vocab_digest({**BASE, "a": 3, "c": 1}) != vocab_digest(BASE)


def test_identical_tokenizers_share_everything() -> None:
    vocab = shared_vocab([member("large", BASE), member("small_base", dict(BASE))])
    assert vocab.size == 4 and vocab.mask is None and vocab.digest == vocab_digest(BASE)
    assert vocab.allows([0, 3]) and not vocab.allows([4])


def test_a_different_id_is_refused_with_both_hashes() -> None:
    other = {**BASE, "b": 3, "c": 2}
    with pytest.raises(VocabMismatch) as caught:
        shared_vocab([member("large", BASE), member("expert 'code'", other)])
    message = str(caught.value)
    assert message.startswith("tokenizers differ: large (vocab hash ")
    assert vocab_digest(BASE) in message and vocab_digest(other) in message
    assert re.search(r"token 'b' is id 2 in one and id 3 in the other", message)


def test_a_missing_token_is_refused() -> None:
    smaller = {"<s>": 0, "a": 1, "x": 2}
    with pytest.raises(VocabMismatch, match="token 'x' is id 2 in one and missing"):
        shared_vocab([member("large", {**BASE, "d": 4}), member("small_base", smaller)])


def test_extra_ids_appended_at_the_end_are_sliced_off() -> None:
    extended = {**BASE, "<tool>": 4, "<pad>": 5}
    vocab = shared_vocab(
        [member("large", extended, width=8), member("small_base", BASE), member("e", BASE, 6)]
    )
    assert vocab.size == 4 and vocab.mask is None
    assert not vocab.allows([4]), "an id only some models know is not allowed in a prompt"


def test_extra_ids_anywhere_but_the_end_are_refused() -> None:
    holey = {"<s>": 0, "a": 1, "c": 3}
    inserted = {**holey, "b2": 2}
    with pytest.raises(VocabMismatch, match="extra ids must come after id 3"):
        shared_vocab([member("large", inserted, 4), member("small_base", holey, 4)])


def test_holes_in_the_shared_ids_are_masked() -> None:
    holey = {"<s>": 0, "a": 1, "c": 3}
    vocab = shared_vocab([member("large", holey, 4), member("small_base", holey, 5)])
    assert vocab.size == 4
    assert vocab.mask is not None and vocab.mask.tolist() == [True, True, False, True]
    assert vocab.allows([0, 1, 3]) and not vocab.allows([2])


def test_a_model_with_too_few_logits_is_refused() -> None:
    with pytest.raises(VocabMismatch, match="expert 'tiny' produces 3 logits, fewer than the 4"):
        shared_vocab([member("large", BASE), member("expert 'tiny'", BASE, width=3)])


def test_the_mask_is_a_bool_tensor() -> None:
    vocab = shared_vocab([member("large", {"a": 0, "c": 2}, 3)])
    assert vocab.mask is not None and vocab.mask.dtype == torch.bool
