"""Our report metrics equal pycocoevalcap's (Java PTBTokenizer + its scorers) on a written corpus."""

from __future__ import annotations

import shutil

import pytest

from callbacks.scoring.nlg import report_nlg_scores
from callbacks.scoring.tokenize import PTB_PUNCTUATIONS, ptb_tokenize
from tests.callbacks.report_corpus import report_pairs

pytest.importorskip("pycocoevalcap")
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap parity needs Java")


@needs_java
def test_tokens_and_scores_equal_pycocoevalcap():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    predictions, references = report_pairs(300, seed=3)
    java_meteor = Meteor()  # its JVM loads the paraphrase tables while the rest runs
    tokenizer = PTBTokenizer()
    res = tokenizer.tokenize({i: [{"caption": p}] for i, p in enumerate(predictions)})
    gts = tokenizer.tokenize({i: [{"caption": r}] for i, r in enumerate(references)})

    mismatched = [(t, res[i][0]) for i, t in enumerate(predictions) if ptb_tokenize(t) != res[i][0]]
    mismatched += [(t, gts[i][0]) for i, t in enumerate(references) if ptb_tokenize(t) != gts[i][0]]
    assert not mismatched, mismatched[:3]

    expected = dict(
        zip(["bleu_1", "bleu_2", "bleu_3", "bleu_4"], Bleu(4).compute_score(gts, res, verbose=0)[0], strict=True)
    )
    expected["rouge_l"] = Rouge().compute_score(gts, res)[0]
    expected["cider"] = Cider().compute_score(gts, res)[0]
    ours = report_nlg_scores(predictions, references, meteor=True)
    expected["meteor"] = java_meteor.compute_score(gts, res)[0]

    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-4), name
    assert 0.05 < ours["bleu_4"] < 0.9 and ours["cider"] > 0.1  # the corpus is neither trivial nor disjoint


def test_punctuation_list_is_pycocoevalcaps():
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

    assert frozenset(PUNCTUATIONS) == PTB_PUNCTUATIONS
