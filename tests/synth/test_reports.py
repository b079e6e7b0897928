"""Report text, CheXpert labels and the inserted findings agree for every study."""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest

from lit_medxchat.core.constants import CHEXPERT_LABELS
from lit_medxchat.synth.findings import DEVICES, Finding, sample_findings
from lit_medxchat.synth.report import write_report


def read_csv_gz(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


# What a reader of the impression would look for to assign each label (not the generator's own tables).
KEYWORDS = {
    "Atelectasis": r"atelectasis",
    "Cardiomegaly": r"cardiomegaly|heart|cardiac",
    "Consolidation": r"consolidation",
    "Edema": r"edema",
    "Enlarged Cardiomediastinum": r"mediastin",
    "Fracture": r"fracture",
    "Lung Lesion": r"nodule|mass",
    "Lung Opacity": r"opacit",
    "Pleural Effusion": r"effusion",
    "Pneumonia": r"pneumonia",
    "Pneumothorax": r"pneumothorax",
    "Support Devices": r"tube|catheter|picc|pacemaker",
}
HEDGES = r"possib|may |cannot be excluded|likely|concerning|could"
NEGATION = r"\bno\b|normal|without"


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"\n ([A-Z][A-Z /()-]+):", "\n" + text.split("\n", 1)[1])
    return {parts[i].lower(): " ".join(parts[i + 1].split()) for i in range(1, len(parts) - 1, 2)}


def _check_format(text: str) -> None:
    lines = text.rstrip("\n").split("\n")
    assert lines[0].strip() == "FINAL REPORT" and lines[0].startswith("  ")
    for line in lines[1:]:
        assert line.startswith(" ") and not line.startswith("  ") or line == " ", repr(line)
        assert len(line) <= 79, repr(line)
    assert "___" in text  # de-identified placeholders as in MIMIC


def test_every_study_agrees_with_its_labels_and_findings(dataset: Path):
    _, rows = read_csv_gz(dataset / "mimic-cxr-2.0.0-chexpert.csv.gz")
    labels_by_study = {r["study_id"]: r for r in rows}
    records = [json.loads(line) for line in (dataset / "synth-ground-truth.jsonl").read_text().splitlines()]
    assert any(r["findings"] for r in records) and any(not r["findings"] for r in records)
    for rec in records:
        text = (dataset / rec["report_path"]).read_text(encoding="utf-8")
        _check_format(text)
        sections = _sections(text)
        assert {"examination", "indication", "comparison", "impression"} <= set(sections), sections.keys()
        impression = sections["impression"].lower()
        row = labels_by_study[rec["study_id"]]
        csv_labels = {n: (float(row[n]) if row[n] else None) for n in CHEXPERT_LABELS}
        assert csv_labels == rec["labels"]
        expected: dict[str, float] = {}
        for f in rec["findings"]:
            for name, value in f["labels"].items():
                expected[name] = max(expected.get(name, -1.0), value)
        stated = {n: v for n, v in csv_labels.items() if v in (1.0, -1.0) and n != "No Finding"}
        assert stated == expected, (rec["study_id"], stated, expected)
        for name, value in csv_labels.items():
            if name == "No Finding" or value is None:
                continue
            assert re.search(KEYWORDS[name], impression), (name, impression)
            if value == 0.0:
                assert re.search(NEGATION, impression), (name, impression)
        if any(v == -1.0 for v in csv_labels.values()):
            assert re.search(HEDGES, impression), impression
        abnormal = [f for f in rec["findings"] if f["kind"] != "support_device"]
        assert (csv_labels["No Finding"] == 1.0) == (not abnormal)
        everything = " ".join(sections.values()).lower()
        for f in abnormal:
            if f["kind"] in ("consolidation", "nodule", "mass"):
                assert f["location"] in everything, (f, everything)
            if f["side"] in ("right", "left") and f["kind"] != "atelectasis":
                assert f["side"] in everything


@pytest.mark.parametrize("seed", range(40))
def test_uncertain_findings_are_hedged_and_certain_ones_are_not(seed):
    rng = np.random.default_rng(seed)
    findings = sample_findings(rng, portable=bool(seed % 2))
    report = write_report(findings, "CHEST (PA AND LAT)", ["PA", "LATERAL"], rng)
    impression = report.impression.lower()
    if any(v == -1.0 for f in findings for v in f.labels.values()):
        assert re.search(HEDGES, impression)
    elif findings:
        assert not re.search(r"possib|cannot be excluded|concerning|could", impression), impression
    for f in findings:
        for name, value in f.labels.items():
            assert report.labels[name] in (value, 1.0)


def test_labels_blank_when_not_mentioned_and_no_finding_rule():
    rng = np.random.default_rng(0)
    only_device = [
        Finding(
            "support_device",
            "none",
            "tip above the carina",
            "n/a",
            None,
            True,
            {"Support Devices": 1.0},
            device=DEVICES[0],
        )
    ]
    report = write_report(only_device, "CHEST (PORTABLE AP)", ["AP"], rng)
    assert report.labels["No Finding"] == 1.0 and report.labels["Support Devices"] == 1.0
    assert "endotracheal tube" in report.impression.lower()
    effusion = [Finding("pleural_effusion", "left", "left base", "small", 20.0, False, {"Pleural Effusion": -1.0})]
    report = write_report(effusion, "CHEST (PA AND LAT)", ["PA", "LATERAL"], rng)
    assert report.labels["Pleural Effusion"] == -1.0 and report.labels["No Finding"] is None
    assert report.labels["Fracture"] in (None, 0.0) and report.labels["Lung Lesion"] in (None, 0.0)
    mentioned = {n for n, v in report.labels.items() if v is not None}
    for name in set(CHEXPERT_LABELS) - mentioned:
        assert not re.search(KEYWORDS.get(name, "^$"), report.impression.lower()), name


def test_project_labeler_reads_the_same_labels_from_the_impression():
    """An independent reader of the text (the project's CheXpert-style labeler) agrees with our labels."""
    from lit_medxchat.labeler import label_report

    disagreements = []
    for i in range(300):
        rng = np.random.default_rng([9, i])
        report = write_report(sample_findings(rng, portable=i % 3 == 0), "CHEST (PA AND LAT)", ["PA", "LATERAL"], rng)
        read = label_report(report.impression)
        disagreements += [
            (name, value, read.get(name), report.impression)
            for name, value in report.labels.items()
            if read.get(name) != value
        ]
    assert not disagreements, disagreements[:3]
