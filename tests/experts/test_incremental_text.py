"""Incremental detokenisation: the same text as decoding everything, a window at a time."""

from __future__ import annotations

import random

from experts.decoding import REPLACEMENT_CHAR, IncrementalText
from tests.experts.fusion.tiny import byte_tokenizer

TOKENIZER = byte_tokenizer()


def decode(ids: list[int]) -> str:
    return str(TOKENIZER.decode(ids, skip_special_tokens=True))


def test_text_matches_a_full_decode_at_every_step() -> None:
    """Multi-byte characters arrive one byte token at a time; nothing partial is settled."""
    ids = TOKENIZER.encode("héllo wörld ✓ 🎉 fin", add_special_tokens=False)
    text = IncrementalText(decode)
    for count, token in enumerate(ids, start=1):
        settled = text.add(token)
        full = decode(ids[:count])
        assert full.startswith(settled) and not settled.endswith(REPLACEMENT_CHAR)
        assert full.rstrip(REPLACEMENT_CHAR) == settled
    assert text.text == "héllo wörld ✓ 🎉 fin"


def test_random_bytes_and_special_tokens() -> None:
    rng = random.Random(0)
    ids = [rng.randrange(0, len(TOKENIZER)) for _ in range(300)]  # invalid UTF-8 too
    text = IncrementalText(decode)
    for token in ids:
        text.add(token)
    assert text.text == decode(ids)


def test_a_decoder_that_drops_a_leading_space_keeps_it_in_context() -> None:
    """SentencePiece-style tokenizers drop the first token's leading space when a decode
    starts with it; the window's context token keeps the space."""
    words = ["The", " cat", " sat", " on", " the", " mat"]

    def sentencepiece(ids: list[int]) -> str:
        return "".join(words[i] for i in ids).removeprefix(" ")

    text = IncrementalText(sentencepiece)
    for token in range(len(words)):
        text.add(token)
    assert text.text == "The cat sat on the mat"


def test_each_step_decodes_a_short_window() -> None:
    lengths: list[int] = []

    def counting(ids: list[int]) -> str:
        lengths.append(len(ids))
        return decode(ids)

    text = IncrementalText(counting)
    for token in TOKENIZER.encode("plain ascii text " * 20, add_special_tokens=False):
        text.add(token)
    assert max(lengths) <= 2
