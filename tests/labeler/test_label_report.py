"""The labeler on report sentences written for these tests: mentions, negation scope, uncertainty,
aggregation over sentences and the No Finding rule."""

from __future__ import annotations

import pytest

from lit_medxchat.core.constants import CHEXPERT_LABELS
from lit_medxchat.labeler import extract_mentions, label_report, label_reports, split_sentences


def _nonblank(text: str) -> dict[str, float]:
    return {name: value for name, value in label_report(text).items() if value is not None}


def test_every_label_is_returned_with_allowed_values():
    labels = label_report("Moderate cardiomegaly. Possible left lower lobe pneumonia. No pneumothorax.")
    assert list(labels) == list(CHEXPERT_LABELS)
    assert set(labels.values()) <= {1.0, 0.0, -1.0, None}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Small right pleural effusion.", {"Pleural Effusion": 1.0}),
        ("There is pleural fluid layering at the left base.", {"Pleural Effusion": 1.0}),
        ("Large left pneumothorax.", {"Pneumothorax": 1.0}),
        ("Right lower lobe consolidation.", {"Consolidation": 1.0}),
        ("Patchy airspace opacity in the left upper lobe.", {"Lung Opacity": 1.0}),
        ("Findings consistent with pneumonia.", {"Pneumonia": 1.0}),
        ("A 1.5 cm nodule in the right upper lobe.", {"Lung Lesion": 1.0}),
        ("Left hilar mass.", {"Lung Lesion": 1.0}),
        ("Mild pulmonary edema.", {"Edema": 1.0}),
        ("Bibasilar atelectasis.", {"Atelectasis": 1.0}),
        ("Cardiomegaly.", {"Cardiomegaly": 1.0}),
        ("The heart size is enlarged.", {"Cardiomegaly": 1.0}),
        ("The heart is moderately enlarged.", {"Cardiomegaly": 1.0}),
        ("Widened mediastinum.", {"Enlarged Cardiomediastinum": 1.0}),
        ("Healed left rib fractures.", {"Fracture": 1.0}),
        ("Right pleural thickening.", {"Pleural Other": 1.0}),
        ("Endotracheal tube terminates 4 cm above the carina.", {"Support Devices": 1.0}),
        ("Right PICC line ends in the SVC.", {"Support Devices": 1.0}),
        ("Left chest wall pacemaker with leads in the right ventricle.", {"Support Devices": 1.0}),
    ],
)
def test_positive_mentions(text, expected):
    labels = _nonblank(text)
    labels.pop("No Finding", None)
    assert labels == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Scope covers every item of a list after one negation word.
        ("No effusion or pneumothorax.", {"Pleural Effusion": 0.0, "Pneumothorax": 0.0}),
        (
            "No focal consolidation, pleural effusion, pneumothorax, or pulmonary edema.",
            {"Consolidation": 0.0, "Pleural Effusion": 0.0, "Pneumothorax": 0.0, "Edema": 0.0},
        ),
        ("There is no evidence of pneumonia.", {"Pneumonia": 0.0}),
        ("The lungs are clear without consolidation.", {"Consolidation": 0.0}),
        ("Lungs are free of consolidation.", {"Consolidation": 0.0}),
        ("Negative for pneumothorax.", {"Pneumothorax": 0.0}),
        ("The lungs are clear of edema.", {"Edema": 0.0}),
        ("Previously seen left effusion has resolved.", {"Pleural Effusion": 0.0}),
        ("Resolved right lower lobe pneumonia.", {"Pneumonia": 0.0}),
        ("Pneumothorax is not seen.", {"Pneumothorax": 0.0}),
        ("Effusion and pneumothorax are no longer seen.", {"Pleural Effusion": 0.0, "Pneumothorax": 0.0}),
        ("The nasogastric tube has been removed.", {"Support Devices": 0.0}),
        ("Interval chest tube removal.", {"Support Devices": 0.0}),
        ("Heart size is normal.", {"Cardiomegaly": 0.0}),
        ("The heart is not enlarged.", {"Cardiomegaly": 0.0}),
        ("Cardiomediastinal silhouette is within normal limits.", {"Enlarged Cardiomediastinum": 0.0}),
        (
            "The cardiac and mediastinal silhouettes are normal.",
            {"Cardiomegaly": 0.0, "Enlarged Cardiomediastinum": 0.0},
        ),
    ],
)
def test_negation(text, expected):
    labels = _nonblank(text)
    labels.pop("No Finding", None)
    assert labels == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Cannot exclude pneumonia.", {"Pneumonia": -1.0}),
        ("Pneumonia cannot be excluded.", {"Pneumonia": -1.0}),
        ("Early pneumonia is not excluded.", {"Pneumonia": -1.0}),
        ("Possible small left effusion.", {"Pleural Effusion": -1.0}),
        ("There may be a small right pneumothorax.", {"Pneumothorax": -1.0}),
        ("A tiny right apical pneumothorax is questioned.", {"Pneumothorax": -1.0}),
        ("Left basilar atelectasis, probably.", {"Atelectasis": -1.0}),
        ("Bibasilar opacities likely atelectasis.", {"Lung Opacity": 1.0, "Atelectasis": 1.0}),
        ("Probable atelectasis at the left base.", {"Atelectasis": -1.0}),
        ("Opacity concerning for pneumonia.", {"Lung Opacity": 1.0, "Pneumonia": -1.0}),
        ("Atelectasis versus pneumonia.", {"Atelectasis": -1.0, "Pneumonia": -1.0}),
        ("Atelectasis vs. consolidation at the right base.", {"Atelectasis": -1.0, "Consolidation": -1.0}),
        ("Left lower lobe atelectasis or pneumonia.", {"Atelectasis": -1.0, "Pneumonia": -1.0}),
        ("Findings suggestive of mild interstitial edema.", {"Edema": -1.0}),
        ("Heart size is at the upper limits of normal.", {"Cardiomegaly": -1.0}),
        ("Borderline cardiomegaly.", {"Cardiomegaly": -1.0}),
        ("The cardiomediastinal silhouette is stable.", {"Enlarged Cardiomediastinum": -1.0}),
    ],
)
def test_uncertainty(text, expected):
    labels = _nonblank(text)
    labels.pop("No Finding", None)
    assert labels == expected


def test_negation_does_not_cross_a_sentence_end():
    labels = label_report("No effusion. Pneumothorax is present.")
    assert labels["Pleural Effusion"] == 0.0
    assert labels["Pneumothorax"] == 1.0


def test_negation_scope_ends_at_but_and_new_clause():
    labels = label_report("No pneumothorax, but there is a small left effusion.")
    assert (labels["Pneumothorax"], labels["Pleural Effusion"]) == (0.0, 1.0)
    labels = label_report("No pneumothorax; moderate cardiomegaly.")
    assert (labels["Pneumothorax"], labels["Cardiomegaly"]) == (0.0, 1.0)
    labels = label_report("No effusion and the heart is enlarged.")
    assert (labels["Pleural Effusion"], labels["Cardiomegaly"]) == (0.0, 1.0)


def test_a_negated_finding_negates_what_it_would_suggest():
    labels = label_report("There is no focal airspace consolidation to suggest pneumonia.")
    assert (labels["Consolidation"], labels["Pneumonia"]) == (0.0, 0.0)
    labels = label_report("Right lower lobe opacity, suspicious for pneumonia.")
    assert (labels["Lung Opacity"], labels["Pneumonia"]) == (1.0, -1.0)


def test_a_sign_yields_to_the_named_finding_in_its_sentence():
    text = "Blunting of the right costophrenic angle may reflect a small pleural effusion."
    assert label_report(text)["Pleural Effusion"] == -1.0
    # Blunting alone names no effusion (CheXpert): it only rules out No Finding.
    assert label_report("Blunting of the right costophrenic angle.")["Pleural Effusion"] is None
    assert label_report("Perihilar haziness.")["Edema"] == 1.0
    labels = label_report("Mild perihilar haziness may reflect mild edema.")
    assert (labels["Edema"], labels["Lung Opacity"]) == (-1.0, None)


def test_hedged_anatomy_is_uncertain():
    assert label_report("The heart may be mildly enlarged.")["Cardiomegaly"] == -1.0
    assert label_report("There is no evidence that the heart is enlarged.")["Cardiomegaly"] == 0.0


def test_pseudo_negation_keeps_the_finding_positive():
    assert label_report("No change in the small left pleural effusion.")["Pleural Effusion"] == 1.0
    assert label_report("No significant interval change in cardiomegaly.")["Cardiomegaly"] == 1.0


def test_edema_signs_are_not_devices():
    labels = _nonblank("Kerley B lines and cephalization.")
    assert labels == {"Edema": 1.0}


def test_non_mentions_are_not_findings():
    labels = _nonblank("Small pericardial effusion. Visceral pleural line is not seen. Lytic lesion of the humerus.")
    assert "Pleural Effusion" not in labels
    assert "Support Devices" not in labels
    assert "Lung Lesion" not in labels


def test_positive_mention_wins_over_negation_elsewhere():
    text = "There is a small left pleural effusion. No right pleural effusion."
    assert label_report(text)["Pleural Effusion"] == 1.0


def test_uncertain_mention_wins_over_negation_elsewhere():
    text = "No pneumonia on the right. Possible pneumonia in the left lower lobe."
    assert label_report(text)["Pneumonia"] == -1.0
    text = "Possible pneumonia in the left lower lobe. Right lower lobe pneumonia."
    assert label_report(text)["Pneumonia"] == 1.0


def test_multi_sentence_report():
    text = (
        "PA and lateral views of the chest. The heart size is normal. The mediastinal contours are unremarkable. "
        "There is a moderate right pleural effusion with adjacent atelectasis. Superimposed pneumonia cannot be "
        "excluded. No pneumothorax. Right internal jugular central venous catheter tip in the SVC."
    )
    assert _nonblank(text) == {
        "Cardiomegaly": 0.0,
        "Enlarged Cardiomediastinum": 0.0,
        "Pleural Effusion": 1.0,
        "Atelectasis": 1.0,
        "Pneumonia": -1.0,
        "Pneumothorax": 0.0,
        "Support Devices": 1.0,
    }


@pytest.mark.parametrize(
    ("text", "no_finding"),
    [
        ("No acute cardiopulmonary process.", 1.0),
        ("Lungs are clear. No effusion or pneumothorax. Heart size is normal.", 1.0),
        # Support devices do not make a study abnormal.
        ("Endotracheal tube in standard position. Lungs are clear.", 1.0),
        ("Small left effusion.", None),
        ("Possible small left effusion.", None),
        # Abnormalities outside the 13 findings exclude No Finding (CheXpert's exclusion list).
        ("Hyperinflation. No evidence of acute disease.", None),
        ("Calcified granuloma in the left upper lobe.", None),
        ("Mild scoliosis. Lungs are clear.", None),
        # ... unless negated.
        ("No emphysema. Lungs are clear.", 1.0),
    ],
)
def test_no_finding_rule(text, no_finding):
    assert label_report(text)["No Finding"] == no_finding


def test_blank_text_has_no_labels():
    assert set(label_report("").values()) == {None}
    assert set(label_report("  \n ").values()) == {None}


def test_non_text_input_names_the_fix():
    with pytest.raises(TypeError, match="report text"):
        label_report(None)  # type: ignore[arg-type]


def test_case_whitespace_and_line_wraps_do_not_matter():
    wrapped = "IMPRESSION:\n  SMALL LEFT PLEURAL\n EFFUSION.  NO\nPNEUMOTHORAX."
    assert _nonblank(wrapped) == {"Pleural Effusion": 1.0, "Pneumothorax": 0.0}


def test_label_reports_keeps_order_and_length():
    texts = ["Cardiomegaly.", "", "No pneumothorax."]
    out = label_reports(texts)
    assert [o["Cardiomegaly"] for o in out] == [1.0, None, None]
    assert out[2]["Pneumothorax"] == 0.0


def test_sentences_split_at_ends_not_at_decimals_or_abbreviations():
    text = "A 1.5 cm nodule. Atelectasis vs. pneumonia, e.g. in the base.\n\nIMPRESSION:\n  none"
    assert split_sentences(text, lowercase=False) == [
        "A 1.5 cm nodule.",
        "Atelectasis vs. pneumonia, e.g. in the base.",
        "IMPRESSION: none",
    ]
    assert split_sentences(text)[1] == "atelectasis vs. pneumonia, e.g. in the base."


def test_mentions_point_into_their_sentence():
    mentions = extract_mentions("No pneumothorax. Small left effusion.")
    by_label = {m.label: m for m in mentions}
    effusion = by_label["Pleural Effusion"]
    assert effusion.sentence_index == 1
    assert effusion.sentence[effusion.start : effusion.end] == "effusion"
    assert (effusion.state, by_label["Pneumothorax"].state) == (1.0, 0.0)


def test_hierarchy_is_applied_only_on_request():
    text = "Mild cardiomegaly. Possible right lower lobe pneumonia. No edema."
    plain = label_report(text)
    assert (plain["Enlarged Cardiomediastinum"], plain["Lung Opacity"]) == (None, None)
    full = label_report(text, hierarchy=True)
    assert (full["Enlarged Cardiomediastinum"], full["Lung Opacity"]) == (1.0, -1.0)
    assert label_report("No edema.", hierarchy=True)["Lung Opacity"] is None  # a negated child says nothing
    assert label_reports([text], hierarchy=True) == [full]
