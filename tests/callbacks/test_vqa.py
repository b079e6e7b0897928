"""The VQA answer-matching rule on written examples, and accuracy by topic and diagnosis."""

from __future__ import annotations

import pytest

from callbacks.scoring.vqa import answer_matches, answer_polarity, normalise_answer, vqa_accuracy


@pytest.mark.parametrize(
    ("prediction", "answer", "correct"),
    [
        ("Yes, there is a small left pleural effusion.", "yes", True),
        ("There is no pneumothorax.", "no", True),
        ("No evidence of edema.", "no", True),
        ("The lungs are free of consolidation.", "no", True),
        ("A pleural effusion is present.", "yes", True),
        ("No.", "yes", False),
        ("It is hard to say.", "yes", False),
        ("The opacity is seen in both lungs.", "bilateral", True),
        ("Left and right lower lobes.", "bilateral", True),
        ("Bilateral effusions.", "left", False),
        ("Opacity in the RLL.", "right lower lobe", True),
        ("Opacity in the right upper lobe.", "right lower lobe", False),
        ("The effusion is mild.", "small", True),
        ("Severe pulmonary edema.", "large", True),
        ("Moderate to large effusion.", "moderate", False),
        ("A moderate effusion.", "moderate", True),
        ("It is loculated.", "loculated", True),
    ],
)
def test_answer_matching_rule(prediction, answer, correct):
    assert answer_matches(prediction, answer) is correct


def test_normalisation_and_fallback_to_reference():
    assert normalise_answer("The Left-Sided, \u2018mild\u2019 effusion!") == "left sided small effusion"
    assert answer_polarity("Pneumothorax is not seen.") == "no"
    assert answer_matches("Heart size is normal.", None, reference="heart size is normal")
    assert not answer_matches("Heart is enlarged.", None, reference="Heart size is normal.")


def test_accuracy_by_topic_and_diagnosis():
    metas = [
        {"topic": "presence", "diagnosis": "Edema", "answer": "yes"},
        {"topic": "presence", "diagnosis": "Pneumothorax", "answer": "no"},
        {"topic": "location", "diagnosis": "Pleural Effusion", "answer": "left"},
        {"topic": "sst", "diagnosis": "Pleural Effusion", "answer": "small"},
    ]
    preds = ["Yes, there is edema.", "Yes, a pneumothorax.", "On the left.", "It is large."]
    out = vqa_accuracy(preds, [""] * 4, metas)
    assert out["vqa_acc"] == 0.5
    assert out["vqa_acc/presence"] == 0.5 and out["vqa_acc/location"] == 1.0 and out["vqa_acc/sst"] == 0.0
    assert out["vqa_acc/diagnosis/pleural_effusion"] == 0.5 and out["vqa_n/diagnosis/pleural_effusion"] == 2
    assert out["vqa_acc/diagnosis/edema"] == 1.0 and out["vqa_n"] == 4
