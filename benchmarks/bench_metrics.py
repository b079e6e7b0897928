"""Report metrics (ours vs pycocoevalcap on the same pairs) and FID on 2048-d features, timed in one run.

METEOR runs the same Java jar on both sides; it is timed with a cold JVM (start + table loading + scoring)
and warm (scoring a second corpus in the same JVM, as our callback does every validation epoch after
starting the JVM during setup).

Run from the repository root: ``python benchmarks/bench_metrics.py [--pairs 3000] [--no-meteor] [--scipy]``.
One torch thread; every ratio compares timings taken side by side in this run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from callbacks.scoring.fid import feature_statistics, fid_from_features, frechet_distance  # noqa: E402
from callbacks.scoring.meteor import MeteorScorer  # noqa: E402
from callbacks.scoring.nlg import NgramCounts, _bleu_from_counts, _cider_from_counts, rouge_l_score  # noqa: E402
from callbacks.scoring.tokenize import ptb_tokenize_all  # noqa: E402
from tests.callbacks.report_corpus import report_pairs  # noqa: E402


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def ours(predictions, references, meteor: bool) -> tuple[dict, dict]:
    times, scores = {}, {}
    (hyps, refs), times["tokenise"] = _timed(lambda: (ptb_tokenize_all(predictions), ptb_tokenize_all(references)))
    refs = [[r] for r in refs]
    # as report_nlg_scores does: n-gram counts built once (timed with BLEU) and shared with CIDEr
    (counts, bleu), times["bleu"] = _timed(lambda: (c := NgramCounts(hyps, refs), _bleu_from_counts(c)))
    scores.update({f"bleu_{k + 1}": v for k, v in enumerate(bleu)})
    scores["rouge_l"], times["rouge_l"] = _timed(rouge_l_score, hyps, refs)
    cider, times["cider"] = _timed(_cider_from_counts, counts)
    scores["cider"] = sum(cider) / len(cider)
    if meteor:
        scorer = MeteorScorer()
        scores["meteor"], times["meteor_cold"] = _timed(lambda: (scorer.start(), scorer.score(hyps, refs))[1])
        _, times["meteor_warm"] = _timed(scorer.score, hyps, refs)
        scorer.close()
    return scores, times


def pycocoevalcap(predictions, references, meteor: bool) -> tuple[dict, dict]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    times, scores = {}, {}

    def tokenise():
        tok = PTBTokenizer()
        res = tok.tokenize({i: [{"caption": p}] for i, p in enumerate(predictions)})
        return tok.tokenize({i: [{"caption": r}] for i, r in enumerate(references)}), res

    (gts, res), times["tokenise"] = _timed(tokenise)
    (bleu, _), times["bleu"] = _timed(lambda: Bleu(4).compute_score(gts, res, verbose=0))
    scores.update({f"bleu_{k + 1}": v for k, v in enumerate(bleu)})
    (scores["rouge_l"], _), times["rouge_l"] = _timed(Rouge().compute_score, gts, res)
    (scores["cider"], _), times["cider"] = _timed(Cider().compute_score, gts, res)
    if meteor:
        scorer = None

        def cold():
            nonlocal scorer
            scorer = Meteor()
            return scorer.compute_score(gts, res)

        (scores["meteor"], _), times["meteor_cold"] = _timed(cold)
        _, times["meteor_warm"] = _timed(scorer.compute_score, gts, res)
        del scorer
    return scores, times


def bench_reports(n: int, meteor: bool) -> None:
    predictions, references = report_pairs(n, seed=1)
    ref_scores, ref_times = pycocoevalcap(predictions, references, meteor)
    our_scores, our_times = ours(predictions, references, meteor)
    print(f"== report metrics on {n} pairs (seconds; ratio = pycocoevalcap / ours)")
    print(f"{'part':16s} {'pycocoevalcap':>8s} {'ours':>8s} {'ratio':>7s}")
    for part in ref_times:
        print(f"{part:16s} {ref_times[part]:8.2f} {our_times[part]:8.2f} {ref_times[part] / our_times[part]:7.1f}x")
    no_meteor = [p for p in ref_times if not p.startswith("meteor")]
    ref_total, our_total = sum(ref_times[p] for p in no_meteor), sum(our_times[p] for p in no_meteor)
    print(f"{'total w/o METEOR':16s} {ref_total:8.2f} {our_total:8.2f} {ref_total / our_total:7.1f}x")
    for jvm in ("warm", "cold") if meteor else ():
        ref_all, our_all = ref_total + ref_times[f"meteor_{jvm}"], our_total + our_times[f"meteor_{jvm}"]
        print(f"{'total, ' + jvm + ' JVM':16s} {ref_all:8.2f} {our_all:8.2f} {ref_all / our_all:7.1f}x")
    worst = max(abs(ref_scores[k] - our_scores[k]) for k in ref_scores)
    print("scores:", {k: round(v, 6) for k, v in our_scores.items()})
    print(f"max |ours - pycocoevalcap| over {len(ref_scores)} metrics: {worst:.2e}")


def bench_fid(n: int, dim: int, with_scipy: bool) -> None:
    rng = np.random.default_rng(0)
    real = rng.standard_normal((n, dim)).astype(np.float32)
    gen = (rng.standard_normal((n, dim)) * 1.1 + 0.05).astype(np.float32)
    print(f"== FID, {dim}-d features, {n} + {n} vectors (seconds)")
    fid, t = _timed(fid_from_features, real, gen)
    print(f"fid_from_features (Gram eigendecomposition) {t:8.2f}  FID={fid:.4f}")
    stats = feature_statistics(real), feature_statistics(gen)
    fid_cov, t_cov = _timed(frechet_distance, *stats[0], *stats[1])
    print(f"frechet_distance (two {dim}x{dim} eigh)    {t_cov:8.2f}  FID={fid_cov:.4f}")
    if with_scipy:
        from scipy import linalg

        (m1, s1), (m2, s2) = ((m.numpy(), s.numpy()) for m, s in stats)
        covmean, t_sp = _timed(lambda: linalg.sqrtm(s1 @ s2).real)
        fid_sp = float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
        print(f"scipy.linalg.sqrtm baseline               {t_sp:8.2f}  FID={fid_sp:.4f}  ratio {t_sp / t:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (both sides need a JVM)")
    parser.add_argument("--fid-n", type=int, default=2000)
    parser.add_argument("--fid-dim", type=int, default=2048)
    parser.add_argument("--scipy", action="store_true", help="also time scipy.linalg.sqrtm (minutes)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench_reports(args.pairs, meteor=not args.no_meteor)
    bench_fid(args.fid_n, args.fid_dim, args.scipy)


if __name__ == "__main__":
    main()
