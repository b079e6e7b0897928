"""Clinical efficacy: label mapping, the paper's merged category, undefined categories, AUROC."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from callbacks.scoring.clinical import binarise, clinical_efficacy, efficacy_scores, label_matrix
from lit_medxchat.core.auroc import binary_auroc
from lit_medxchat.core.constants import CHEXPERT_LABELS


def _labels(**positive: float | None) -> dict[str, float | None]:
    out: dict[str, float | None] = dict.fromkeys(CHEXPERT_LABELS)
    out.update({k.replace("_", " "): v for k, v in positive.items()})
    return out


def test_label_mapping_and_merged_category():
    assert [binarise(v) for v in (1.0, 0.0, -1.0, None, float("nan"))] == [1, 0, 0, 0, 0]
    assert binarise(-1.0, uncertain_as=1.0) == 1
    with pytest.raises(ValueError, match="2.0"):
        binarise(2.0)
    m = label_matrix([_labels(Pneumonia=1.0), _labels(Consolidation=-1.0), _labels()], ["Consolidation-or-Pneumonia"])
    assert m[:, 0].tolist() == [1.0, 0.0, 0.0]


def test_binary_auroc_is_pairwise_probability_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    scores = rng.integers(0, 5, 200) / 4.0  # many ties
    pos, neg = scores[y == 1][:, None], scores[y == 0][None, :]
    expected = float(((pos > neg) + 0.5 * (pos == neg)).mean())
    assert binary_auroc(y, scores) == pytest.approx(expected, abs=1e-6)
    # binary scores: AUROC = (TPR + TNR) / 2
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    p = np.array([1, 1, 0, 0, 0, 0, 1])
    assert binary_auroc(y, p) == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert math.isnan(binary_auroc(np.ones(3), np.ones(3)))


def test_f1_auroc_averages_by_hand():
    ref = np.array([[1, 0], [1, 1], [0, 0], [0, 1]], dtype=float)
    pred = np.array([[1, 0], [0, 1], [0, 1], [0, 1]], dtype=float)
    scores, per_cat = efficacy_scores(pred, ref, ["A", "B"])
    assert per_cat["f1"] == {"A": pytest.approx(2 / 3), "B": pytest.approx(0.8)}
    assert scores["f1_macro"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert scores["f1_micro"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))  # tp 3, fp 1, fn 1
    assert scores["f1_weighted"] == pytest.approx((2 / 3 * 2 + 0.8 * 2) / 4)
    assert per_cat["auroc"]["A"] == pytest.approx((0.5 + 1.0) / 2)


def test_category_without_positives_is_undefined_not_zero():
    reference = [_labels(Edema=1.0), _labels(Edema=0.0), _labels(Pneumothorax=None), _labels(Edema=1.0)]
    predicted = [_labels(Edema=1.0), _labels(), _labels(Edema=1.0), _labels(Edema=1.0)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = clinical_efficacy(predicted, reference)
    assert math.isnan(out["ce_f1/pneumothorax"]) and math.isnan(out["ce_auroc/pneumothorax"])
    assert out["ce_f1/edema"] == pytest.approx(0.8)
    # macro over the six = the only defined categories (Edema, and No Finding which is all-negative -> undefined)
    assert out["ce_f1_macro"] == pytest.approx(0.8)
    assert any("Pneumothorax" in str(w.message) for w in caught)
    assert set(k for k in out if k.startswith("ce14_")) == {
        f"ce14_{m}_{a}" for m in ("f1", "auroc") for a in ("micro", "macro", "weighted")
    }
