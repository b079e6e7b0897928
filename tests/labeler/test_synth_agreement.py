"""The labeler against the built-in dataset's reports, whose generator knows the true labels.

The synthetic report writer labels every sentence it writes (stated, hedged, negated) and the
study from its impression, as MIMIC-CXR did; our labeler reading the same impression text must
agree, or the built-in demo would train on labels that contradict its reports.
"""

from __future__ import annotations

import numpy as np

from lit_medxchat.core.constants import CHEXPERT_LABELS
from lit_medxchat.labeler import label_reports
from lit_medxchat.synth.findings import sample_findings
from lit_medxchat.synth.report import write_report


def test_labels_agree_with_the_synthetic_ground_truth():
    rng = np.random.default_rng(7)
    reports = [
        write_report(sample_findings(rng, portable=bool(k % 3 == 0)), "CHEST (PA AND LAT)", ["PA", "LATERAL"], rng)
        for k in range(300)
    ]
    ours = label_reports([report.impression for report in reports])
    disagreements = [
        (name, report.labels[name], labels[name], report.impression)
        for report, labels in zip(reports, ours, strict=True)
        for name in CHEXPERT_LABELS
        if report.labels[name] != labels[name]
    ]
    assert not disagreements, disagreements[:5]
    assert sum(r.labels["Pleural Effusion"] == 1.0 for r in reports) >= 20  # the sample covers real findings
