"""The trie-shaped phrase regex matches exactly what a plain longest-first alternation matches."""

from __future__ import annotations

import random
import re

import pytest

from lit_medxchat.labeler.matcher import phrase_regex


def _plain(phrases: list[str]) -> re.Pattern[str]:
    ordered = sorted(set(phrases), key=len, reverse=True)
    return re.compile(r"(?<![\w-])(?:" + "|".join(map(re.escape, ordered)) + r")(?![\w-])")


def test_same_matches_as_a_plain_alternation_on_random_text():
    rng = random.Random(0)
    words = ["no", "not", "pleural", "effusion", "effusions", "tube", "line", "lines", "kerley", "b", "vs.", "r/o"]
    phrases = sorted({" ".join(rng.choices(words, k=rng.randint(1, 3))) for _ in range(60)})
    trie, plain = phrase_regex(phrases), _plain(phrases)
    longer = 0
    for _ in range(300):
        text = " ".join(rng.choices([*words, "x", "pleurals", "-tube", "effusion,"], k=12))
        spans = [m.span() for m in trie.finditer(text)]
        assert spans == [m.span() for m in plain.finditer(text)], text
        longer += sum(" " in text[a:b] for a, b in spans)
    assert longer > 100  # multi-word phrases were matched, not only single words


def test_longest_phrase_wins_and_words_stay_whole():
    pattern = phrase_regex(["effusion", "pleural effusion", "no", "no evidence of"])
    text = "no evidence of pleural effusion; noted effusions, no-effusion"
    assert [m.group() for m in pattern.finditer(text)] == ["no evidence of", "pleural effusion"]


def test_empty_vocabulary_or_phrase_is_refused():
    with pytest.raises(ValueError, match="empty"):
        phrase_regex([])
    with pytest.raises(ValueError, match="empty phrase"):
        phrase_regex(["effusion", ""])
