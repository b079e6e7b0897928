"""Definitions of the NLG metrics on cases small enough to check by hand."""

from __future__ import annotations

import math
import random
import warnings

import pytest

from callbacks.scoring import meteor as meteor_mod
from callbacks.scoring.nlg import bleu_score, cider_score, lcs_length, report_nlg_scores, rouge_l_score
from callbacks.scoring.tokenize import ptb_tokenize


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("There is a 2.5cm nodule (RUL).", "there is a 2.5 cm nodule -lrb- rul -rrb-"),
        ("5mm nodule, e.g. at 3:45 p.m.; s/p CABG.", "5mm nodule e.g. at 3:45 p.m. s/p cabg"),
        ("The patient's effusion can't be excluded!", "the patient 's effusion ca n't be excluded"),
        ("Left-sided PICC -- stable...", "left-sided picc stable"),
        ("Dr. ___ was paged; \u201cmild\u201d edema \u2014 new.", "dr. ___ was paged mild edema new"),
        ("Values 1.0/-1.0; a_name and ___-year-old.", "values 1.0 / -1.0 a_name and ___ year-old"),
        ("<Xray> PA view. </Xray>", "<xray> pa view </xray>"),
        ("", ""),
    ],
)
def test_ptb_tokenize_report_text(text, tokens):
    assert ptb_tokenize(text) == tokens


def _lcs_dp(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def test_bit_parallel_lcs_equals_dynamic_programming():
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 30))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 30))]
        assert lcs_length(a, b) == _lcs_dp(a, b)


def test_bleu_by_hand_with_brevity_penalty():
    # hyp 3 words vs ref 4 words: unigram 3/3, bigram 1/2; BP = exp(1 - 4/3)
    b1, b2 = bleu_score(["the cat sat"], [["the cat sat down"]], n=2)
    assert b1 == pytest.approx(math.exp(1 - 4 / 3), rel=1e-9)
    assert b2 == pytest.approx(math.sqrt(1.0 * 2 / 2) * math.exp(1 - 4 / 3), rel=1e-9)
    # closest reference length: 3-word ref chosen, so no penalty
    assert bleu_score(["a b c"], [["a b c", "a b c d e f"]], n=1)[0] == pytest.approx(1.0)


def test_rouge_l_beta_and_cider_identity():
    # P = 2/2, R = 2/4 -> F_beta with beta 1.2
    p, r, beta = 1.0, 0.5, 1.2
    assert rouge_l_score(["a b"], [["a x b y"]]) == pytest.approx((1 + beta**2) * p * r / (r + beta**2 * p))
    hyps = ["no effusion", "small left effusion", "heart normal"]
    mean, per_item = cider_score(hyps, [[h] for h in hyps])
    assert mean == pytest.approx(sum(per_item) / 3) and all(s > 0 for s in per_item)
    worse, _ = cider_score(["heart normal", "no effusion", "small left effusion"], [[h] for h in hyps])
    assert worse < mean


def test_meteor_without_java_is_missing_with_one_warning(monkeypatch):
    monkeypatch.setattr(meteor_mod.shutil, "which", lambda name: None)
    monkeypatch.setattr(meteor_mod, "_WARNED", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = report_nlg_scores(["no effusion"], ["no pleural effusion"])
        second = report_nlg_scores(["no effusion"], ["no pleural effusion"])
    assert first["meteor"] is None and second["meteor"] is None
    assert sum("METEOR" in str(w.message) for w in caught) == 1
    assert first["bleu_1"] > 0


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        report_nlg_scores(["a", "b"], ["a"], meteor=False)
