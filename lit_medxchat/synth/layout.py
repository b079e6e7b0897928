"""The MIMIC-CXR-JPG layout: identifiers, paths, the three CSVs and the patient-level split.

Formats follow docs/mimic-cxr-format.md: subject ids 1xxxxxxx, study ids 5xxxxxxx, dicom ids of 40
hex characters in five dash-separated groups, `files/pXX/pSUBJECT/sSTUDY/DICOM.jpg` images and
`files/pXX/pSUBJECT/sSTUDY.txt` reports. CSVs are gzip-compressed with a zero timestamp so the same
seed gives byte-identical files.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from pathlib import Path

import numpy as np

from lit_medxchat.core.constants import CHEXPERT_LABELS

METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv.gz"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv.gz"
CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv.gz"
GROUND_TRUTH = "synth-ground-truth.jsonl"
METADATA_COLUMNS: tuple[str, ...] = (
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
)
SPLIT_COLUMNS: tuple[str, ...] = ("dicom_id", "study_id", "subject_id", "split")
CHEXPERT_COLUMNS: tuple[str, ...] = ("subject_id", "study_id", *CHEXPERT_LABELS)
VIEW_CODE_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral", "LL": "left lateral"}
SPLIT_FRACTIONS = (("train", 0.7), ("validate", 0.1), ("test", 0.2))


def _unique_ids(rng: np.random.Generator, count: int, low: int, high: int) -> list[int]:
    seen: set[int] = set()
    out: list[int] = []
    while len(out) < count:
        for value in rng.integers(low, high, size=count - len(out) + 8):
            if int(value) not in seen:
                seen.add(int(value))
                out.append(int(value))
                if len(out) == count:
                    break
    return out


def subject_ids(seed: int, count: int) -> list[int]:
    """`count` distinct 8-digit subject ids in 10,000,000-19,999,999, fixed by `seed`."""
    return _unique_ids(np.random.default_rng([seed, 0x5B]), count, 10_000_000, 20_000_000)


def study_ids(seed: int, count: int) -> list[int]:
    """`count` distinct 8-digit study ids in 50,000,000-59,999,999 (random: no chronological order)."""
    return _unique_ids(np.random.default_rng([seed, 0x57]), count, 50_000_000, 60_000_000)


def dicom_id(rng: np.random.Generator) -> str:
    """40 random hex characters in five groups of 8, like `02aa804e-bde0afdd-112c0b34-7bc16630-4e384014`."""
    digits = rng.bytes(20).hex()
    return "-".join(digits[i : i + 8] for i in range(0, 40, 8))


def split_of(seed: int, subject_id: int) -> str:
    """Patient-level split from a seeded hash: all studies of a subject land in the same split."""
    digest = hashlib.sha256(f"{seed}:{subject_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    acc = 0.0
    for name, fraction in SPLIT_FRACTIONS:
        acc += fraction
        if u < acc:
            return name
    return SPLIT_FRACTIONS[-1][0]


def subject_dir(subject_id: int) -> str:
    return f"files/p{str(subject_id)[:2]}/p{subject_id}"


def image_path(subject_id: int, study_id: int, dicom: str) -> str:
    return f"{subject_dir(subject_id)}/s{study_id}/{dicom}.jpg"


def report_path(subject_id: int, study_id: int) -> str:
    return f"{subject_dir(subject_id)}/s{study_id}.txt"


def label_cell(value: float | None) -> str:
    """CheXpert value code: 1.0 / 0.0 / -1.0, blank when not mentioned."""
    return "" if value is None else f"{float(value):.1f}"


def write_csv_gz(path: Path, columns: tuple[str, ...], rows: list[list]) -> None:
    """Write a gzip CSV with a fixed header and no timestamp in the gzip header (reproducible bytes)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"{path.name}: row has {len(row)} cells, expected {len(columns)}: {row}")
        writer.writerow(row)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(text.getvalue().encode("utf-8"))
