"""VQA answers on the built-in dataset's reports against the generator's ground truth.

The synthetic generator knows each inserted finding's side, location and size; the location
and size-severity answers read from its report text must match them.
"""

from __future__ import annotations

import numpy as np

from lit_medxchat.core.constants import VIEW_SENTENCES
from lit_medxchat.dialogues import DialogueBuilder
from lit_medxchat.synth.findings import sample_findings
from lit_medxchat.synth.report import write_report

DIAGNOSIS_OF_KIND = {
    "pleural_effusion": "Pleural Effusion",
    "consolidation": "Consolidation-or-Pneumonia",
    "nodule": "Lung Lesion",
    "mass": "Lung Lesion",
    "pneumothorax": "Pneumothorax",
    "edema": "Edema",
}
TYPES = {"patchy", "focal", "dense", "multifocal", "lobar", "nodule", "mass", "interstitial", "alveolar"}


def test_location_and_size_answers_match_the_inserted_findings():
    rng = np.random.default_rng(11)
    builder = DialogueBuilder(seed=0)
    checked = {"location": 0, "sst": 0}
    for k in range(150):
        findings = sample_findings(rng, portable=False)
        report = write_report(findings, "CHEST (PA AND LAT)", ["PA", "LATERAL"], rng)
        text = " ".join(
            [
                VIEW_SENTENCES["PA"],
                f"findings: {report.findings}" if report.findings else "",
                f"impression: {report.impression}",
            ]
        )
        truth = {DIAGNOSIS_OF_KIND[f.kind]: f for f in findings if f.kind in DIAGNOSIS_OF_KIND}
        sections = {"findings": report.findings, "impression": report.impression}
        dialogues = builder.build(key=f"s{k}", sections=sections, labels=report.labels, view="PA", report_text=text)
        for dialogue in dialogues:
            for turn in dialogue["turns"][1::2] if dialogue["task"] == "vqa" else ():
                finding = truth.get(turn["diagnosis"])
                if turn["topic"] == "presence" or finding is None:
                    continue
                if turn["topic"] == "location":
                    allowed = {finding.side, finding.location, finding.location.replace(" apical", " apex")}
                    allowed |= {"bilateral"} if finding.side == "bilateral" else set()
                    assert turn["answer"] in allowed, (turn, finding)
                else:
                    assert turn["answer"] == finding.severity or turn["answer"] in TYPES, (turn, finding)
                checked[turn["topic"]] += 1
    assert checked["location"] >= 50 and checked["sst"] >= 50, checked
