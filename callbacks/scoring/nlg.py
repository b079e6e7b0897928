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
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from callbacks.scoring.meteor import MeteorScorer


def _check(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"got {len(hypotheses)} hypotheses but {len(references)} reference lists; pass one each")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError(f"references[{i}] must be a non-empty list of strings, got {refs!r}")


class NgramCounts:
    """Term-frequency matrices of a corpus' 1..n-grams: ``tf[k]`` is a CSR (texts, distinct (k+1)-grams).

    Built with numpy for the whole corpus at once: tokens get integer ids, a (k+1)-gram id is the
    compacted pair (k-gram id, next token id). Rows ``[:n_hyp]`` are hypotheses, then references in order.
    """

    def __init__(self, hypotheses: Sequence[str], references: Sequence[Sequence[str]], n: int = 4) -> None:
        import numpy as np
        from scipy import sparse

        texts = [h.split() for h in hypotheses] + [r.split() for refs in references for r in refs]
        self.n, self.n_hyp = n, len(hypotheses)
        self.owner = np.repeat(np.arange(len(references)), [len(refs) for refs in references])  # item of each ref
        self.lengths = np.array([len(t) for t in texts], dtype=np.int64)
        flat = [tok for t in texts for tok in t]
        tok = (
            np.unique(np.array(flat, dtype=object).astype(str), return_inverse=True)[1].astype(np.int64)
            if flat
            else (np.zeros(0, np.int64))
        )
        text_of = np.repeat(np.arange(len(texts)), self.lengths)
        pos = np.arange(len(tok)) - np.repeat(np.cumsum(self.lengths) - self.lengths, self.lengths)
        remaining = self.lengths[text_of] - pos  # tokens from here to the end of the text
        base = int(tok.max()) + 1 if len(tok) else 1
        code = tok.copy()
        self.tf = []
        for k in range(n):
            if k > 0:
                valid = remaining > k
                nxt = np.zeros_like(code)
                nxt[valid] = code[valid] * base + tok[np.flatnonzero(valid) + k]
                code = np.zeros_like(code)
                if valid.any():
                    code[valid] = np.unique(nxt[valid], return_inverse=True)[1]
            valid = remaining > k
            grams = int(code[valid].max()) + 1 if valid.any() else 0
            keys, counts = np.unique(text_of[valid] * max(grams, 1) + code[valid], return_counts=True)
            rows, cols = np.divmod(keys, max(grams, 1))
            self.tf.append(sparse.csr_matrix((counts.astype(np.float64), (rows, cols)), shape=(len(texts), grams)))

    def hyp(self, k: int):
        return self.tf[k][: self.n_hyp]

    def ref(self, k: int):
        return self.tf[k][self.n_hyp :]


def _bleu_from_counts(c: NgramCounts) -> list[float]:
    """pycocoevalcap's corpus BLEU from `NgramCounts` (clipping by the max count over an item's references)."""
    import numpy as np

    n, n_items = c.n, c.n_hyp
    hyp_len = c.lengths[:n_items]
    ref_len = c.lengths[n_items:]
    # closest reference length per item, ties to the shorter one
    order = np.lexsort((ref_len, np.abs(ref_len - hyp_len[c.owner]), c.owner))
    first = np.unique(c.owner[order], return_index=True)[1]
    closest = ref_len[order][first]
    slots = np.arange(len(c.owner)) - np.searchsorted(c.owner, c.owner)  # index of each ref within its item
    correct = []
    for k in range(n):
        refs = c.ref(k)
        max_ref = None
        for slot in range(int(slots.max()) + 1 if len(slots) else 0):
            rows = np.flatnonzero(slots == slot)
            part = _scatter_rows(refs[rows], c.owner[rows], n_items)
            max_ref = part if max_ref is None else max_ref.maximum(part)
        correct.append(float(c.hyp(k).minimum(max_ref).sum()))
    guess = [float(np.maximum(0, hyp_len - k).sum()) for k in range(n)]
    test_total, ref_total = float(hyp_len.sum()), float(closest.sum())
    scores, product = [], 1.0
    for k in range(n):
        product *= (correct[k] + 1e-15) / (guess[k] + 1e-9)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_total + 1e-15) / (ref_total + 1e-9)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def _scatter_rows(matrix, rows, n_rows: int):
    """A (n_rows, cols) CSR whose row ``rows[i]`` is ``matrix[i]`` (others empty)."""
    import numpy as np
    from scipy import sparse

    select = sparse.csr_matrix((np.ones(len(rows)), (rows, np.arange(len(rows)))), shape=(n_rows, len(rows)))
    return (select @ matrix).tocsr()


def bleu_score(hypotheses: Sequence[str], references: Sequence[Sequence[str]], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n (pycocoevalcap's ``option="closest"``); returns ``n`` floats in [0, 1]."""
    _check(hypotheses, references)
    if not hypotheses:
        return [float("nan")] * n
    return _bleu_from_counts(NgramCounts(hypotheses, references, n))


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


def _cider_from_counts(c: NgramCounts, sigma: float = 6.0) -> list[float]:
    """Per-item CIDEr from `NgramCounts`; the same terms as pycocoevalcap, summed as sparse products."""
    import numpy as np
    from scipy import sparse

    n, owner = c.n, c.owner
    n_items = c.n_hyp
    item_of_ref = sparse.csr_matrix((np.ones(len(owner)), (owner, np.arange(len(owner)))), shape=(n_items, len(owner)))
    log_n = math.log(float(n_items))
    total = np.zeros(len(owner))
    # pycocoevalcap's "length" is the number of bigrams of a text
    length = np.maximum(0, c.lengths - 1).astype(np.float64) if n > 1 else np.zeros(len(c.lengths))
    penalty = np.exp(-((length[:n_items][owner] - length[n_items:]) ** 2) / (2 * sigma**2))
    for k in range(n):
        h, r = c.hyp(k), c.ref(k)
        df = np.asarray(((item_of_ref @ (r > 0)) > 0).sum(axis=0)).ravel()
        idf = sparse.diags(log_n - np.log(np.maximum(1.0, df)))
        wh, wr = (h @ idf).tocsr(), (r @ idf).tocsr()
        val = np.asarray(wh[owner].minimum(wr).multiply(wr).sum(axis=1)).ravel()
        norm_h = np.sqrt(np.asarray(wh.multiply(wh).sum(axis=1)).ravel())[owner]
        norm_r = np.sqrt(np.asarray(wr.multiply(wr).sum(axis=1)).ravel())
        both = (norm_h != 0) & (norm_r != 0)
        val[both] /= norm_h[both] * norm_r[both]
        total += val * penalty
    per_item = np.bincount(owner, weights=total, minlength=n_items)
    return (per_item / n / np.bincount(owner, minlength=n_items) * 10.0).tolist()


def cider_score(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0
) -> tuple[float, list[float]]:
    """pycocoevalcap's CIDEr(-D) over the corpus; returns (mean, per-item scores). Typical range 0-10."""
    _check(hypotheses, references)
    if not hypotheses:
        return float("nan"), []
    scores = _cider_from_counts(NgramCounts(hypotheses, references, n), sigma)
    return sum(scores) / len(scores), scores


def report_nlg_scores(
    predictions: Sequence[str], references: Sequence[str], meteor: bool | MeteorScorer = True
) -> dict[str, float | None]:
    """All report NLG metrics on raw texts, tokenised the pycocoevalcap way first.

    Returns ``bleu_1..bleu_4``, ``rouge_l``, ``cider`` and ``meteor`` (None when METEOR is disabled or Java
    is missing). One reference per prediction, as in report generation. ``meteor`` may be a running
    `MeteorScorer` to reuse its JVM.
    """
    from callbacks.scoring.meteor import MeteorScorer, meteor_score
    from callbacks.scoring.tokenize import ptb_tokenize_all

    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references; pass one each")
    hyps = ptb_tokenize_all(predictions)
    refs = [[r] for r in ptb_tokenize_all(references)]
    if not hyps:
        return dict.fromkeys(("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider", "meteor"), float("nan"))
    counts = NgramCounts(hyps, refs)  # shared by BLEU and CIDEr
    scores: dict[str, float | None] = {f"bleu_{k + 1}": s for k, s in enumerate(_bleu_from_counts(counts))}
    scores["rouge_l"] = rouge_l_score(hyps, refs)
    cider = _cider_from_counts(counts)
    scores["cider"] = sum(cider) / len(cider)
    if isinstance(meteor, MeteorScorer):
        scores["meteor"] = meteor.score(hyps, refs)
    else:
        scores["meteor"] = meteor_score(hyps, refs) if meteor else None
    return scores
