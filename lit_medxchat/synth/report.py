"""Radiology reports and CheXpert labels written from a study's inserted findings.

Every sentence carries the labels it implies (1.0 stated, -1.0 hedged, 0.0 negated). As in
MIMIC-CXR-JPG, a study's CheXpert labels come from its IMPRESSION; labels never mentioned there stay
blank, and "No Finding" is 1.0 only when none of the other labels (Support Devices excepted) is
positive or uncertain. Text follows the MIMIC report layout: a centred FINAL REPORT title, then lines
starting with one space, hard-wrapped at 79 characters, `___` for anything that would be PHI.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import numpy as np

from lit_medxchat.core.constants import CHEXPERT_LABELS
from lit_medxchat.synth.findings import Finding

TITLE = " " * 33 + "FINAL REPORT"
LINE_WIDTH = 79
NO_FINDING_EXEMPT = ("No Finding", "Support Devices")


@dataclass
class Statement:
    text: str
    labels: dict[str, float] = field(default_factory=dict)


@dataclass
class Report:
    """The report file text, its two main sections and the study's 14 CheXpert labels (None = blank)."""

    text: str
    findings: str | None
    impression: str
    labels: dict[str, float | None]


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _basal(location: str) -> str:
    return {"right base": "right basilar", "left base": "left basilar", "bibasilar": "bibasilar"}.get(
        location, location
    )


def _effusion(f: Finding, rng, short: bool) -> str:
    noun = "pleural effusions" if f.side == "bilateral" else "pleural effusion"
    if not f.certain:
        return _pick(
            rng,
            [
                f"Possible small {f.side} {noun}.",
                f"Blunting of the {f.side} costophrenic angle may reflect a small {noun}.",
                f"A small {f.side} {noun} cannot be excluded.",
            ],
        )
    if short:
        return _pick(
            rng, [f"{f.severity.capitalize()} {f.side} {noun}.", f"{f.severity.capitalize()} {f.side} {noun}, new."]
        )
    return _pick(
        rng,
        [
            f"There is a {f.severity} {f.side} {noun} with a meniscus at the {f.location}.",
            f"{f.severity.capitalize()} {f.side} {noun} is present, layering at the {f.location}.",
            f"A {f.severity} {f.side} {noun} blunts the costophrenic angle.",
        ],
    )


def _consolidation(f: Finding, rng, short: bool) -> str:
    """Always says "opacity" and "consolidation": the finding sets both Lung Opacity and Consolidation."""
    pneumonia = f.labels.get("Pneumonia")
    density = {"mild": "patchy", "moderate": "focal", "severe": "dense"}[f.severity]
    if pneumonia == 1.0:
        tail = _pick(rng, [", consistent with pneumonia.", ", compatible with pneumonia."])
    elif pneumonia == -1.0:
        tail = _pick(
            rng, [", concerning for pneumonia.", ", which may represent pneumonia.", "; pneumonia is possible."]
        )
    else:
        tail = "."
    if short:
        text = _pick(
            rng,
            [
                f"{f.location} opacity consistent with consolidation",
                f"{density} {f.location} consolidation and opacity",
            ],
        )
    else:
        text = (
            _pick(rng, ["There is ", "New ", ""])
            + f"{density} opacity in the {f.location} consistent with consolidation"
        )
    return text[0].upper() + text[1:] + tail


def _nodule(f: Finding, rng, short: bool) -> str:
    noun = f.kind  # nodule | mass
    if short:
        return _pick(
            rng,
            [
                f"{f.severity} {noun} in the {f.location}; CT is recommended for further evaluation.",
                f"{f.location.capitalize()} {noun} measuring {f.severity}.",
            ],
        )
    return _pick(
        rng,
        [
            f"A {f.severity} {noun} is seen in the {f.location}.",
            f"There is a {f.severity} rounded {noun} projecting over the {f.location}.",
        ],
    )


def _pneumothorax(f: Finding, rng, short: bool) -> str:
    if not f.certain:
        return _pick(
            rng,
            [
                f"Possible small {f.side} apical pneumothorax.",
                f"A tiny {f.side} apical pneumothorax cannot be excluded.",
            ],
        )
    if short:
        return f"{f.severity.capitalize()} {f.side} apical pneumothorax."
    return _pick(
        rng,
        [
            f"There is a {f.severity} {f.side} apical pneumothorax; the visceral pleural line is displaced"
            " from the chest wall.",
            f"{f.severity.capitalize()} {f.side} pneumothorax is seen at the apex.",
        ],
    )


def _cardiomegaly(f: Finding, rng, short: bool) -> str:
    if not f.certain:
        return _pick(rng, ["Possible mild cardiomegaly.", "The heart may be mildly enlarged."])
    return _pick(
        rng,
        [
            f"{f.severity.capitalize()} cardiomegaly.",
            f"The heart is {f.severity}ly enlarged.",
            f"{f.severity.capitalize()} enlargement of the cardiac silhouette.",
        ],
    )


def _edema(f: Finding, rng, short: bool) -> str:
    if not f.certain:
        return _pick(rng, ["Possible mild pulmonary edema.", "Mild perihilar haziness may reflect mild edema."])
    return _pick(
        rng,
        [
            f"{f.severity.capitalize()} pulmonary edema.",
            f"{f.severity.capitalize()} perihilar edema, bilaterally.",
            f"There is {f.severity} bilateral perihilar pulmonary edema.",
        ],
    )


def _atelectasis(f: Finding, rng, short: bool) -> str:
    where = _basal(f.location)
    if not f.certain:
        return _pick(rng, [f"Possible {where} atelectasis.", f"{where.capitalize()} atelectasis is likely."])
    return _pick(
        rng,
        [
            f"{f.severity.capitalize()} {where} atelectasis.",
            f"There is {f.severity} {where} atelectasis.",
            f"{where.capitalize()} {f.severity} plate-like atelectasis.",
        ],
    )


def _device(f: Finding, rng, short: bool) -> str:
    name = f.device or "support device"
    if short:
        return _pick(
            rng, [f"{name[0].upper() + name[1:]} in standard position.", f"{name[0].upper() + name[1:]} as described."]
        )
    return {
        "endotracheal tube": "Endotracheal tube terminates approximately 4.5 cm above the carina.",
        "enteric tube": "An enteric tube courses below the diaphragm with its tip in the stomach.",
        "right internal jugular central venous catheter": (
            "Right internal jugular central venous catheter terminates in the mid SVC."
        ),
        "left PICC line": "Left-sided PICC line tip is in the low SVC.",
        "pacemaker": "Left chest wall pacemaker with leads in the right atrium and right ventricle.",
    }.get(name, f"{name} in place.")


POSITIVE = {
    "pleural_effusion": _effusion,
    "consolidation": _consolidation,
    "nodule": _nodule,
    "mass": _nodule,
    "pneumothorax": _pneumothorax,
    "cardiomegaly": _cardiomegaly,
    "edema": _edema,
    "atelectasis": _atelectasis,
    "support_device": _device,
}

# Pertinent negatives: (text choices, labels set to 0.0). Used only when no finding touches those labels.
NEGATIVES: list[tuple[list[str], dict[str, float]]] = [
    (
        ["No pleural effusion or pneumothorax.", "There is no pleural effusion or pneumothorax."],
        {"Pleural Effusion": 0.0, "Pneumothorax": 0.0},
    ),
    (["No pleural effusion.", "There is no pleural effusion."], {"Pleural Effusion": 0.0}),
    (["No pneumothorax.", "There is no pneumothorax."], {"Pneumothorax": 0.0}),
    (["No focal consolidation.", "There is no focal consolidation."], {"Consolidation": 0.0}),
    (["No focal consolidation to suggest pneumonia."], {"Consolidation": 0.0, "Pneumonia": 0.0}),
    (["Heart size is normal.", "The heart is normal in size."], {"Cardiomegaly": 0.0}),
    (["No pulmonary edema.", "There is no pulmonary edema."], {"Edema": 0.0}),
    (["Mediastinal and hilar contours are normal."], {"Enlarged Cardiomediastinum": 0.0}),
    (["No displaced fracture is seen."], {"Fracture": 0.0}),
]
NORMAL_IMPRESSIONS = [
    "No acute cardiopulmonary process.",
    "No acute intrathoracic process.",
    "No acute cardiopulmonary abnormality.",
    "Normal chest radiograph.",
]
INDICATIONS = [
    ("cough and fever", "eval for pneumonia"),
    ("shortness of breath", "eval for acute process"),
    ("chest pain", "eval for acute cardiopulmonary process"),
    ("hypoxia", "eval for edema or effusion"),
    ("history of CHF", "eval for fluid overload"),
    ("s/p line placement", "assess line position"),
    ("weakness", "r/o pneumonia"),
]


# Negatives radiologists commonly repeat in an impression ("No pneumothorax."); the rest stay in findings.
IMPRESSION_NEGATIVE_LABELS = frozenset({"Pleural Effusion", "Pneumothorax", "Consolidation", "Pneumonia", "Edema"})


def _negatives(
    findings: list[Finding], rng: np.random.Generator, k: int, labels: frozenset[str] | None = None
) -> list[Statement]:
    touched = {name for f in findings for name in f.labels}
    if any(f.kind in ("consolidation", "edema", "atelectasis", "nodule", "mass") for f in findings):
        touched |= {"Consolidation", "Pneumonia"}
    allowed = [n for n in NEGATIVES if not (set(n[1]) & touched) and (labels is None or set(n[1]) <= labels)]
    order = rng.permutation(len(allowed))
    chosen: list[Statement] = []
    covered: set[str] = set()
    for i in order:
        texts, labels = allowed[int(i)]
        if set(labels) & covered:
            continue
        chosen.append(Statement(_pick(rng, texts), dict(labels)))
        covered |= set(labels)
        if len(chosen) >= k:
            break
    return chosen


def _wrap_paragraph(text: str) -> list[str]:
    return [" " + line for line in textwrap.wrap(text, LINE_WIDTH - 1, break_on_hyphens=False)]


def _inline(header: str, text: str) -> list[str]:
    lines = textwrap.wrap(f"{header}:  {text}", LINE_WIDTH - 1, break_on_hyphens=False)
    return [" " + line for line in lines]


def study_labels(statements: list[Statement]) -> dict[str, float | None]:
    """Merge statement labels (positive wins over uncertain over negative) and apply the No Finding rule."""
    labels: dict[str, float | None] = dict.fromkeys(CHEXPERT_LABELS)
    rank = {1.0: 3, -1.0: 2, 0.0: 1}
    for st in statements:
        for name, value in st.labels.items():
            current = labels[name]
            if current is None or rank[value] > rank[current]:
                labels[name] = value
    abnormal = any(labels[n] in (1.0, -1.0) for n in CHEXPERT_LABELS if n not in NO_FINDING_EXEMPT)
    labels["No Finding"] = None if abnormal else 1.0
    return labels


def write_report(findings: list[Finding], procedure: str, views: list[str], rng: np.random.Generator) -> Report:
    """The report text and labels for a study (`views`: its images' ViewPosition values)."""
    complaint, question = INDICATIONS[int(rng.integers(len(INDICATIONS)))]
    sex = _pick(rng, ["man", "woman"])
    impression: list[Statement] = []
    body: list[Statement] = []
    order = sorted(findings, key=lambda f: f.kind == "support_device")
    for f in order:
        impression.append(Statement(POSITIVE[f.kind](f, rng, True), dict(f.labels)))
        body.append(Statement(POSITIVE[f.kind](f, rng, False), dict(f.labels)))
    body += _negatives(findings, rng, k=int(rng.integers(2, 5)))
    if not any(f.kind != "support_device" for f in findings):
        impression.insert(0, Statement(_pick(rng, NORMAL_IMPRESSIONS), {}))
    elif rng.random() < 0.6:
        impression += _negatives(findings, rng, k=1, labels=IMPRESSION_NEGATIVE_LABELS)
    if not findings:
        body.insert(0, Statement(_pick(rng, ["The lungs are clear.", "Lungs are well expanded and clear."]), {}))

    labels = study_labels(impression)
    impression_text = " ".join(st.text for st in impression)
    include_findings = rng.random() < 0.75
    findings_text = " ".join(st.text for st in body) if include_findings else None

    lines = [TITLE]
    lines += _inline("EXAMINATION", procedure) + [" "]
    lines += _inline("INDICATION", f"___ year old {sex} with {complaint}  // {question}") + [" "]
    if rng.random() < 0.8:
        technique = "Portable AP chest radiograph." if "AP" in views and len(views) == 1 else "Chest PA and lateral."
        lines += _inline("TECHNIQUE", technique) + [" "]
    lines += _inline("COMPARISON", _pick(rng, ["___", "None.", "Chest radiograph ___."])) + [" "]
    if findings_text is not None:
        lines += [" FINDINGS:", " "] + _wrap_paragraph(findings_text) + [" "]
    lines += [" IMPRESSION:", " "] + _wrap_paragraph(impression_text)
    return Report("\n".join(lines) + "\n", findings_text, impression_text, labels)
