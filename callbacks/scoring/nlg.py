"""Corpus NLG metrics with pycocoevalcap's definitions: BLEU-1..4, ROUGE-L, CIDEr(-D), METEOR.

Inputs are *tokenised* strings (see `callbacks.scoring.tokenize.ptb_tokenize`), one hypothesis and
one or more references per item, exactly as pycocoevalcap's scorers receive them. Every score is a
corpus score computed once over the whole validation set: averaging per-rank or per-batch BLEU or
CIDEr gives other numbers (CIDEr's IDF and BLEU's brevity penalty are corpus statistics).

Definitions reproduced (read from pycocoevalcap 1.2):
- BLEU: clipped n-gram counts summed over the corpus, ``(correct + 1e-15) / (guess + 1e-9)``
  products, brevity penalty ``exp(1 - r/c)`` with r the sum over items of the reference length
  closest to the hypothesis length (ties: the shorter), applied when c < r.
- ROUGE-L: per item, LCS-based precision and recall maximised over references, F with beta=1.2,
  then the mean over items. Tokens come from ``str.split(" ")`` as there (an empty text is one
  empty token).
- CIDEr (pycocoevalcap's "CIDEr", i.e. CIDEr-D without stemming): TF-IDF n-gram vectors (n=1..4)
  with document frequencies over the *reference* corpus, IDF ``log(N) - log(max(1, df))``,
  hypothesis weights clipped by the reference's, Gaussian length penalty sigma=6 on the difference
  of the two texts' bigram counts (pycocoevalcap measures "length" that way), mean over n, mean
  over references, x10, mean over items.
- METEOR 1.5: only through Java (`meteor_score`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

Ngrams = Counter[tuple[str, ...]]


def _ngrams(words: list[str], n: int = 4) -> Ngrams:
    """Counts of all 1..n-grams of a token list."""
    counts: Ngrams = Counter()
    for k in range(1, n + 1):
        counts.update(tuple(words[i : i + k]) for i in range(len(words) - k + 1))
    return counts


def _check(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"got {len(hypotheses)} hypotheses but {len(references)} reference lists; pass one each")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError(f"references[{i}] must be a non-empty list of strings, got {refs!r}")


def bleu_score(hypotheses: Sequence[str], references: Sequence[Sequence[str]], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n (pycocoevalcap's ``option="closest"``); returns ``n`` floats in [0, 1]."""
    _check(hypotheses, references)
    correct, guess = [0] * n, [0] * n
    test_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references, strict=True):
        words = hyp.split()
        counts = _ngrams(words, n)
        max_ref: Ngrams = Counter()
        lengths = []
        for ref in refs:
            ref_words = ref.split()
            lengths.append(len(ref_words))
            max_ref |= _ngrams(ref_words, n)
        hyp_len = len(words)
        test_len += hyp_len
        ref_len += min((abs(length - hyp_len), length) for length in lengths)[1]
        for k in range(n):
            guess[k] += max(0, hyp_len - k)
        for gram, count in counts.items():
            correct[len(gram) - 1] += min(max_ref.get(gram, 0), count)
    scores, product = [], 1.0
    for k in range(n):
        product *= (correct[k] + 1e-15) / (guess[k] + 1e-9)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + 1e-15) / (ref_len + 1e-9)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Allison-Dix) over Python ints.

    O(len(b)) big-integer operations instead of pycocoevalcap's O(len(a) * len(b)) Python loop;
    same result.
    """
    if len(a) < len(b):
        a, b = b, a
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    row = full
    for token in b:
        match = row & masks.get(token, 0)
        row = ((row + match) | (row - match)) & full
    return len(a) - row.bit_count()


def rouge_l_score(hypotheses: Sequence[str], references: Sequence[Sequence[str]], beta: float = 1.2) -> float:
    """Mean over items of ROUGE-L F (beta=1.2), precision/recall maximised over references."""
    _check(hypotheses, references)
    if not hypotheses:
        return float("nan")
    total = 0.0
    for hyp, refs in zip(hypotheses, references, strict=True):
        cand = hyp.split(" ")
        prec, rec = [], []
        for ref in refs:
            ref_tokens = ref.split(" ")
            lcs = lcs_length(ref_tokens, cand)
            prec.append(lcs / len(cand))
            rec.append(lcs / len(ref_tokens))
        p, r = max(prec), max(rec)
        if p != 0 and r != 0:
            total += (1 + beta**2) * p * r / (r + beta**2 * p)
    return total / len(hypotheses)


def _tfidf(counts: Ngrams, df: dict[tuple[str, ...], float], log_n: float, n: int):
    """TF-IDF vectors split by n-gram order, their norms and the bigram count ("length")."""
    vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(n)]
    norm = [0.0] * n
    length = 0
    for gram, tf in counts.items():
        k = len(gram) - 1
        weight = tf * (log_n - math.log(max(1.0, df.get(gram, 0.0))))
        vec[k][gram] = weight
        norm[k] += weight * weight
        if k == 1:
            length += tf
    return vec, [math.sqrt(x) for x in norm], length


def cider_score(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0
) -> tuple[float, list[float]]:
    """pycocoevalcap's CIDEr(-D) over the corpus; returns (mean, per-item scores). Typical range 0-10."""
    _check(hypotheses, references)
    if not hypotheses:
        return float("nan"), []
    ref_counts = [[_ngrams(r.split(), n) for r in refs] for refs in references]
    df: Counter[tuple[str, ...]] = Counter()
    for refs in ref_counts:
        df.update(set().union(*refs))
    log_n = math.log(float(len(references)))
    scores = []
    for hyp, refs in zip(hypotheses, ref_counts, strict=True):
        vec, norm, length = _tfidf(_ngrams(hyp.split(), n), df, log_n, n)
        total = 0.0
        for ref in refs:
            vec_r, norm_r, length_r = _tfidf(ref, df, log_n, n)
            penalty = math.exp(-((length - length_r) ** 2) / (2 * sigma**2))
            for k in range(n):
                ref_k = vec_r[k]
                val = sum(min(w, ref_k.get(g, 0.0)) * ref_k.get(g, 0.0) for g, w in vec[k].items())
                if norm[k] != 0 and norm_r[k] != 0:
                    val /= norm[k] * norm_r[k]
                total += val * penalty
        scores.append(total / n / len(refs) * 10.0)
    return sum(scores) / len(scores), scores


def report_nlg_scores(
    predictions: Sequence[str], references: Sequence[str], meteor: bool = True
) -> dict[str, float | None]:
    """All report NLG metrics on raw texts, tokenised the pycocoevalcap way first.

    Returns ``bleu_1..bleu_4``, ``rouge_l``, ``cider`` and ``meteor`` (None when METEOR is disabled or Java
    is missing). One reference per prediction, as in report generation.
    """
    from callbacks.scoring.meteor import meteor_score
    from callbacks.scoring.tokenize import ptb_tokenize_all

    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references; pass one each")
    hyps = ptb_tokenize_all(predictions)
    refs = [[r] for r in ptb_tokenize_all(references)]
    scores: dict[str, float | None] = {f"bleu_{k + 1}": s for k, s in enumerate(bleu_score(hyps, refs))}
    scores["rouge_l"] = rouge_l_score(hyps, refs)
    scores["cider"] = cider_score(hyps, refs)[0]
    scores["meteor"] = meteor_score(hyps, refs) if meteor else None
    return scores
