"""The demo's evaluation functions on hand-made inputs whose answers are known."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from lit_medxchat.core.constants import CHEXPERT_LABELS, VIEW_CLASSES
from lit_medxchat.demo.evaluate import (
    findings_auroc,
    majority_vqa,
    view_accuracy,
)
from lit_medxchat.demo.report import Evidence
from lit_medxchat.evaluation.image_tables import detection_rates, view_group_agreement

PA, AP, LAT = (VIEW_CLASSES.index(v) for v in ("PA", "AP", "LATERAL"))
L = len(CHEXPERT_LABELS)


def _one_hot(indices: list[int]) -> np.ndarray:
    probs = np.zeros((len(indices), len(VIEW_CLASSES)))
    probs[np.arange(len(indices)), indices] = 1.0
    return probs


def test_view_accuracy_against_the_training_majority() -> None:
    outputs = {"probs": _one_hot([PA, AP, LAT, LAT]), "view": np.array([PA, PA, LAT, LAT])}
    result = view_accuracy(outputs, train_views=[LAT, LAT, PA])
    assert result["accuracy"] == 0.75
    assert result["majority_class"] == "LATERAL" and result["majority_accuracy"] == 0.5
    assert result["frontal_lateral_accuracy"] == 1.0  # the PA/AP confusion is still frontal


def test_findings_auroc_skips_labels_without_both_classes() -> None:
    effusion, edema = CHEXPERT_LABELS.index("Pleural Effusion"), CHEXPERT_LABELS.index("Edema")
    labels = np.zeros((4, L))
    labels[:2, effusion] = 1
    labels[:, edema] = 1  # only positives: no AUROC
    probs = np.full((4, L), 0.5)
    probs[:, effusion] = [0.9, 0.2, 0.3, 0.1]  # one of the four positive/negative pairs misordered
    result = findings_auroc({"probs": probs, "labels": labels, "label_mask": np.ones((4, L))})
    assert result["per_label"]["Pleural Effusion"] == pytest.approx(0.75)
    assert math.isnan(result["per_label"]["Edema"])
    assert result["labels_scored"] == ["Pleural Effusion"] and result["macro_auroc"] == pytest.approx(0.75)


def test_findings_auroc_honours_the_mask() -> None:
    effusion = CHEXPERT_LABELS.index("Pleural Effusion")
    labels, probs, mask = np.zeros((4, L)), np.full((4, L), 0.5), np.ones((4, L))
    labels[:2, effusion] = 1
    probs[:, effusion] = [0.9, 0.2, 0.3, 0.1]
    mask[2, effusion] = 0  # the misordered negative is masked out
    assert findings_auroc({"probs": probs, "labels": labels, "label_mask": mask})["macro_auroc"] == 1.0


def test_detection_rates_compare_prompted_findings_with_no_finding_prompts() -> None:
    nofinding, effusion = CHEXPERT_LABELS.index("No Finding"), CHEXPERT_LABELS.index("Pleural Effusion")
    labels = torch.zeros(4, L)
    labels[:2, effusion] = 1
    labels[2:, nofinding] = 1
    probs = torch.zeros(4, L)
    probs[:, effusion] = torch.tensor([0.9, 0.4, 0.6, 0.1])  # detected on 1 of 2 prompted, fires on 1 of 2 normal
    result = detection_rates([{"gen_probs": probs, "labels": labels}])
    assert result == {"detection_rate": 0.5, "no_finding_rate": 0.5, "pairs": 2}


def test_view_group_agreement_counts_frontal_versus_lateral() -> None:
    items = [{"view_probs": torch.tensor(_one_hot([AP, LAT, PA, PA])), "view": torch.tensor([PA, LAT, LAT, AP])}]
    assert view_group_agreement(items) == 0.75


def test_majority_vqa_answers_the_most_frequent_training_answer_per_question_type() -> None:
    answers = {("presence", "Edema"): Counter({"No, there is no edema.": 3, "Yes, edema is present.": 1})}
    items = [
        {"reference": "No, edema is absent.", "meta": {"topic": "presence", "diagnosis": "Edema", "answer": "no"}},
        {"reference": "Yes, edema.", "meta": {"topic": "presence", "diagnosis": "Edema", "answer": "yes"}},
    ]
    assert majority_vqa(items, answers)["vqa_acc"] == 0.5


@pytest.mark.parametrize(
    ("row", "beats", "meets"),
    [
        (Evidence("m", "f1", 0.70, 0.50, "b", margin=0.15), True, True),
        (Evidence("m", "f1", 0.60, 0.50, "b", margin=0.15), True, False),
        (Evidence("m", "auroc", 0.80, 0.50, "chance", threshold=0.85), True, False),
        (Evidence("m", "fid", 3.0, 4.0, "untrained", lower_is_better=True), True, True),
        (Evidence("m", "fid", 5.0, 4.0, "untrained", lower_is_better=True), False, False),
        (Evidence("m", "acc", float("nan"), 0.5, "b"), False, False),
        (Evidence("m", "acc", 0.5, 0.5, "b"), False, False),
    ],
)
def test_evidence_rows_beat_and_meet_their_goals(row: Evidence, beats: bool, meets: bool) -> None:
    assert row.beats_baseline is beats and row.meets_goal is meets
    assert row.as_dict()["beats"] is beats
