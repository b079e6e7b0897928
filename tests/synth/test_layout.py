"""The output tree and CSVs are exactly the MIMIC-CXR-JPG layout that `data prepare mimic-cxr` reads."""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections import defaultdict
from pathlib import Path

from PIL import Image

from lit_medxchat.core.constants import CHEXPERT_LABELS

DICOM_RE = r"[0-9a-f]{8}(-[0-9a-f]{8}){4}"
IMAGE_RE = re.compile(rf"files/p1\d/p(1\d{{7}})/s(5\d{{7}})/({DICOM_RE})\.jpg")
REPORT_RE = re.compile(r"files/p1\d/p(1\d{7})/s(5\d{7})\.txt")
METADATA_COLUMNS = [
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]


def read_csv_gz(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_tree_holds_only_documented_files(dataset: Path):
    top = sorted(p.name for p in dataset.iterdir())
    assert top == sorted(
        [
            "files",
            "mimic-cxr-2.0.0-metadata.csv.gz",
            "mimic-cxr-2.0.0-split.csv.gz",
            "mimic-cxr-2.0.0-chexpert.csv.gz",
            "synth-ground-truth.jsonl",
        ]
    )
    for path in (dataset / "files").rglob("*"):
        if path.is_file():
            rel = path.relative_to(dataset).as_posix()
            assert IMAGE_RE.fullmatch(rel) or REPORT_RE.fullmatch(rel), rel
            match = IMAGE_RE.fullmatch(rel) or REPORT_RE.fullmatch(rel)
            assert rel.startswith(f"files/p{match.group(1)[:2]}/p{match.group(1)}/")


def test_metadata_csv_matches_images(dataset: Path):
    columns, rows = read_csv_gz(dataset / "mimic-cxr-2.0.0-metadata.csv.gz")
    assert columns == METADATA_COLUMNS
    images = {p.stem: p for p in (dataset / "files").rglob("*.jpg")}
    assert sorted(r["dicom_id"] for r in rows) == sorted(images)
    per_study = defaultdict(list)
    for r in rows:
        path = images[r["dicom_id"]]
        assert path.parent.name == f"s{r['study_id']}" and path.parent.parent.name == f"p{r['subject_id']}"
        with Image.open(path) as im:
            assert im.mode == "L" and im.format == "JPEG"
            assert (int(r["Columns"]), int(r["Rows"])) == im.size and max(im.size) == 128
        assert r["ViewPosition"] in {"PA", "AP", "LATERAL", "LL"}
        assert r["PerformedProcedureStepDescription"] in {"CHEST (PA AND LAT)", "CHEST (PORTABLE AP)"}
        assert r["ProcedureCodeSequence_CodeMeaning"] == r["PerformedProcedureStepDescription"]
        assert r["ViewCodeSequence_CodeMeaning"] in {"postero-anterior", "antero-posterior", "lateral", "left lateral"}
        assert r["PatientOrientationCodeSequence_CodeMeaning"] in {"Erect", "Recumbent", ""}
        assert re.fullmatch(r"2[12]\d{2}[01]\d[0-3]\d", r["StudyDate"]) and 21000101 <= int(r["StudyDate"]) <= 22001231
        assert re.fullmatch(r"\d{1,6}(\.\d{1,3})?", r["StudyTime"]), r["StudyTime"]
        per_study[r["study_id"]].append(r)
    for study_rows in per_study.values():
        assert 1 <= len(study_rows) <= 3
        assert len({(r["StudyDate"], r["StudyTime"], r["subject_id"]) for r in study_rows}) == 1
        views = sorted(r["ViewPosition"] for r in study_rows)
        if study_rows[0]["PerformedProcedureStepDescription"] == "CHEST (PORTABLE AP)":
            assert views == ["AP"]
        else:
            assert any(v in ("LATERAL", "LL") for v in views) and any(v in ("PA", "AP") for v in views)


def test_split_is_patient_level_and_matches_metadata(dataset: Path):
    columns, rows = read_csv_gz(dataset / "mimic-cxr-2.0.0-split.csv.gz")
    assert columns == ["dicom_id", "study_id", "subject_id", "split"]
    _, meta = read_csv_gz(dataset / "mimic-cxr-2.0.0-metadata.csv.gz")
    assert [(r["dicom_id"], r["study_id"], r["subject_id"]) for r in rows] == [
        (r["dicom_id"], r["study_id"], r["subject_id"]) for r in meta
    ]
    by_subject = defaultdict(set)
    for r in rows:
        assert r["split"] in {"train", "validate", "test"}
        by_subject[r["subject_id"]].add(r["split"])
    assert all(len(s) == 1 for s in by_subject.values())


def test_chexpert_csv_one_row_per_study_with_value_codes(dataset: Path):
    columns, rows = read_csv_gz(dataset / "mimic-cxr-2.0.0-chexpert.csv.gz")
    assert columns == ["subject_id", "study_id", *CHEXPERT_LABELS]
    reports = {p.stem[1:]: p for p in (dataset / "files").rglob("s*.txt")}
    assert sorted(r["study_id"] for r in rows) == sorted(reports)
    for r in rows:
        assert reports[r["study_id"]].parent.name == f"p{r['subject_id']}"
        for name in CHEXPERT_LABELS:
            assert r[name] in {"1.0", "0.0", "-1.0", ""}, (name, r[name])
        assert r["No Finding"] in {"1.0", ""}
    # raw text check: blanks are empty cells, not "nan"
    text = gzip.decompress((dataset / "mimic-cxr-2.0.0-chexpert.csv.gz").read_bytes()).decode()
    assert "nan" not in text.lower() and text.splitlines()[0].startswith("subject_id,study_id,Atelectasis,")


def test_ground_truth_jsonl_covers_every_study_and_image(dataset: Path):
    lines = (dataset / "synth-ground-truth.jsonl").read_text().splitlines()
    _, meta = read_csv_gz(dataset / "mimic-cxr-2.0.0-metadata.csv.gz")
    views = {r["dicom_id"]: r["ViewPosition"] for r in meta}
    studies = {r["study_id"] for r in meta}
    records = [json.loads(line) for line in lines]
    assert {r["study_id"] for r in records} == studies and len(records) == len(studies)
    for rec in records:
        assert (dataset / rec["report_path"]).is_file()
        for image in rec["images"]:
            assert views[image["dicom_id"]] == image["view_position"]
            assert (dataset / image["path"]).is_file()
        for f in rec["findings"]:
            assert set(f) >= {"kind", "side", "location", "severity", "size_mm", "labels", "certain"}
            assert f["labels"] and all(v in (1.0, -1.0) for v in f["labels"].values())


def test_preview_contact_sheet_is_written(dataset: Path):
    with Image.open(dataset.parent / "preview.png") as sheet:
        assert sheet.format == "PNG" and sheet.width > 300 and sheet.height > 200


def test_about_a_third_of_studies_are_normal():
    import numpy as np

    from lit_medxchat.synth.findings import sample_findings

    normal = sum(not sample_findings(np.random.default_rng([3, i]), portable=False) for i in range(600))
    assert 0.26 <= normal / 600 <= 0.42


def test_split_fractions_and_ids_over_many_subjects():
    from collections import Counter

    from lit_medxchat.synth import layout
    from lit_medxchat.synth.generate import plan_studies

    plans = plan_studies(3000, seed=5)
    subjects = {p.subject_id: p.split for p in plans}
    counts = Counter(subjects.values())
    assert abs(counts["train"] / 3000 - 0.7) < 0.03 and abs(counts["validate"] / 3000 - 0.1) < 0.02
    assert abs(counts["test"] / 3000 - 0.2) < 0.03
    assert len({p.study_id for p in plans}) == len(plans) and len(subjects) == 3000
    assert all(10_000_000 <= s < 20_000_000 for s in subjects)
    assert all(50_000_000 <= p.study_id < 60_000_000 for p in plans)
    dates: dict[int, list[int]] = {}
    for p in plans:
        dates.setdefault(p.subject_id, []).append(p.study_date)
    assert all(d == sorted(d) and len(set(d)) == len(d) for d in dates.values())  # one study per visit day
    assert layout.split_of(5, plans[0].subject_id) == plans[0].split
