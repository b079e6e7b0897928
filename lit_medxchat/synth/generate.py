"""Render a whole built-in dataset: plan studies, render them in parallel, write the MIMIC-CXR-JPG tree.

Determinism: identifiers and dates are planned in the parent from the seed; everything else in a
study (procedure, views, findings, poses, noise, report wording) comes from the study's own RNG,
`default_rng([seed, study_index])`, so the output is byte-identical for any worker count. Workers
write their study's images and report; the parent writes CSVs and ground truth in study order.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import multiprocessing as mp
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lit_medxchat.core.constants import CHEXPERT_LABELS, view_class
from lit_medxchat.synth import layout
from lit_medxchat.synth.anatomy import Anatomy
from lit_medxchat.synth.findings import Delta, Device, sample_delta_rng, sample_findings
from lit_medxchat.synth.insert import insert_finding
from lit_medxchat.synth.render import render_view, sample_pose
from lit_medxchat.synth.report import write_report


@dataclass(frozen=True)
class StudyPlan:
    """What the parent decides for a study: ids, date/time, split (all a pure function of the seed)."""

    index: int
    subject_id: int
    study_id: int
    study_date: int  # YYYYMMDD (shifted years 2100-2200)
    study_time: str  # HHMMSS.fff written as a number: leading zeros dropped, as in MIMIC
    split: str


@dataclass
class StudyResult:
    """What a worker returns: CSV rows and the ground-truth record of one study."""

    index: int
    metadata_rows: list[list]
    split_rows: list[list]
    chexpert_row: list
    ground_truth: dict
    previews: list[tuple[np.ndarray, str]]
    unplaced: list[str]


def plan_studies(num_subjects: int, seed: int) -> list[StudyPlan]:
    """1-3 studies per subject with increasing dates; ids unique across the dataset."""
    rng = np.random.default_rng([seed, 0xDA7E])
    subjects = layout.subject_ids(seed, num_subjects)
    counts = rng.choice([1, 2, 3], size=num_subjects, p=[0.5, 0.3, 0.2])
    studies = layout.study_ids(seed, int(counts.sum()))
    plans: list[StudyPlan] = []
    for subject, count in zip(subjects, counts, strict=True):
        day = dt.date(2110, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 80)))
        split = layout.split_of(seed, subject)
        for _ in range(int(count)):
            seconds = int(rng.integers(0, 86400))
            millis = int(rng.integers(0, 1000))
            hh, mm, ss = seconds // 3600, (seconds // 60) % 60, seconds % 60
            time_text = f"{hh * 10000 + mm * 100 + ss}.{millis:03d}".rstrip("0").rstrip(".")
            plans.append(
                StudyPlan(len(plans), subject, studies[len(plans)], int(day.strftime("%Y%m%d")), time_text, split)
            )
            day += dt.timedelta(days=int(rng.integers(1, 400)))
    return plans


def _acquisition(rng: np.random.Generator) -> tuple[str, list[str], str]:
    """(procedure, ViewPosition per image, patient orientation), in MIMIC's proportions roughly."""
    u = rng.random()
    if u < 0.4:
        orientation = ["Recumbent", "Erect", ""][int(rng.choice(3, p=[0.45, 0.4, 0.15]))]
        return "CHEST (PORTABLE AP)", ["AP"], orientation
    lateral = "LL" if rng.random() < 0.25 else "LATERAL"
    if u < 0.88:
        return "CHEST (PA AND LAT)", ["PA", lateral], "Erect"
    if u < 0.94:
        return "CHEST (PA AND LAT)", ["AP", lateral], "Erect"  # AP taken on a fixed unit happens in MIMIC
    return "CHEST (PA AND LAT)", ["PA", lateral, "LATERAL"], "Erect"


_ANATOMY: Anatomy | None = None
PREVIEW_STUDIES = 60


def _init_worker(anatomy: Anatomy) -> None:
    global _ANATOMY
    _ANATOMY = anatomy


def render_study(anatomy: Anatomy, plan: StudyPlan, seed: int, out: Path, size: int, keep_previews: int) -> StudyResult:
    """Render one study's images, write them and its report under `out`; return its CSV rows."""
    from PIL import Image

    rng = np.random.default_rng([seed, plan.index])
    procedure, positions, orientation = _acquisition(rng)
    findings = sample_findings(rng, portable=positions == ["AP"])
    deltas: list[Delta] = []
    devices: list[Device] = []
    placed, unplaced = [], []
    for i, finding in enumerate(findings):
        change = insert_finding(anatomy, finding, sample_delta_rng(seed, plan.index, i))
        if isinstance(change, Device):
            devices.append(change)
        elif change is not None:
            deltas.append(change)
        if change is None:  # e.g. a lobe this CT's segmentation lacks: neither shown nor reported
            unplaced.append(f"{finding.kind} ({finding.location})")
        else:
            placed.append(finding)
    findings = placed
    report = write_report(findings, procedure, positions, rng)

    study_dir = out / layout.subject_dir(plan.subject_id) / f"s{plan.study_id}"
    study_dir.mkdir(parents=True, exist_ok=True)
    (out / layout.report_path(plan.subject_id, plan.study_id)).write_text(report.text, encoding="utf-8")

    metadata_rows, split_rows, images, previews = [], [], [], []
    caption = "; ".join(_caption(f) for f in findings) or "no finding"
    for position in positions:
        dicom = layout.dicom_id(rng)
        view = "LATERAL" if position in ("LATERAL", "LL") else position
        pose = sample_pose(rng, view)
        pixels = render_view(anatomy, pose, size, rng, deltas, devices)
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=95)
        rel = layout.image_path(plan.subject_id, plan.study_id, dicom)
        (out / rel).write_bytes(buffer.getvalue())
        rows, cols = pixels.shape
        metadata_rows.append(
            [
                dicom,
                plan.subject_id,
                plan.study_id,
                procedure,
                position,
                rows,
                cols,
                plan.study_date,
                plan.study_time,
                procedure,
                layout.VIEW_CODE_MEANING[position],
                orientation,
            ]
        )
        split_rows.append([dicom, plan.study_id, plan.subject_id, plan.split])
        images.append(
            {
                "dicom_id": dicom,
                "view_position": position,
                "view": view_class(position),
                "path": rel,
                "pose": pose.to_json(),
            }
        )
        if len(previews) < keep_previews:
            previews.append((pixels, f"{position}: {caption}"))
    chexpert_row = [plan.subject_id, plan.study_id] + [layout.label_cell(report.labels[n]) for n in CHEXPERT_LABELS]
    ground_truth = {
        "subject_id": str(plan.subject_id),
        "study_id": str(plan.study_id),
        "split": plan.split,
        "procedure": procedure,
        "report_path": layout.report_path(plan.subject_id, plan.study_id),
        "findings": [f.to_json() for f in findings],
        "labels": report.labels,
        "images": images,
        "anatomy": anatomy.source,
    }
    return StudyResult(plan.index, metadata_rows, split_rows, chexpert_row, ground_truth, previews, unplaced)


def _caption(finding) -> str:
    if finding.kind == "support_device":
        return str(finding.device)
    return f"{finding.kind.replace('_', ' ')} ({finding.location}, {finding.severity})"


def _work(args: tuple[StudyPlan, int, str, int, int]) -> StudyResult:
    plan, seed, out, size, keep = args
    assert _ANATOMY is not None, "worker started without an anatomy"
    return render_study(_ANATOMY, plan, seed, Path(out), size, keep)


@contextlib.contextmanager
def study_results(
    anatomy: Anatomy, plans: list[StudyPlan], seed: int, out: Path, size: int, workers: int, keep_previews: int
) -> Iterator[Iterator[StudyResult]]:
    """Results in study order, rendered by `workers` processes (1 = in this process).

    The pool is started on entry, before any progress-bar thread exists, so forking is safe.
    """
    # Only the first studies send pixels back for the contact sheet.
    jobs = [(p, seed, str(out), size, keep_previews if p.index < PREVIEW_STUDIES else 0) for p in plans]
    if workers <= 1:
        _init_worker(anatomy)
        yield map(_work, jobs)
        return
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(workers, initializer=_init_worker, initargs=(anatomy,)) as pool:
        yield pool.imap(_work, jobs, chunksize=max(1, min(8, len(jobs) // (workers * 8))))


@dataclass
class Summary:
    studies: int
    images: int
    subjects: int
    by_split: dict[str, int]
    normal_studies: int
    previews: list[tuple[np.ndarray, str]]
    unplaced: dict[str, int]  # findings drawn but impossible in this anatomy (left out of image and report)


def generate(
    out: Path,
    anatomy: Anatomy,
    num_subjects: int,
    seed: int,
    size: int = 512,
    workers: int = 1,
    keep_previews: int = 0,
    progress: Callable[[Iterator[StudyResult], int], Iterator[StudyResult]] | None = None,
) -> Summary:
    """Write the dataset under `out` (which must exist and be empty) and return counts."""
    plans = plan_studies(num_subjects, seed)
    metadata, splits, chexpert, previews = [], [], [], []
    by_split = {name: 0 for name, _ in layout.SPLIT_FRACTIONS}
    normal = 0
    unplaced: dict[str, int] = {}
    seen_dicoms: set[str] = set()
    with (
        study_results(anatomy, plans, seed, out, size, workers, keep_previews) as results,
        open(out / layout.GROUND_TRUTH, "w", encoding="utf-8") as truth,
    ):
        if progress is not None:
            results = progress(results, len(plans))
        for result in results:
            for row in result.metadata_rows:
                if row[0] in seen_dicoms:
                    raise RuntimeError(f"dicom id {row[0]} drawn twice; rerun with another --seed")
                seen_dicoms.add(row[0])
            metadata += result.metadata_rows
            splits += result.split_rows
            chexpert.append(result.chexpert_row)
            by_split[result.ground_truth["split"]] += 1
            normal += not result.ground_truth["findings"]
            previews += result.previews
            for item in result.unplaced:
                unplaced[item] = unplaced.get(item, 0) + 1
            truth.write(json.dumps(result.ground_truth, sort_keys=True) + "\n")
    layout.write_csv_gz(out / layout.METADATA_CSV, layout.METADATA_COLUMNS, metadata)
    layout.write_csv_gz(out / layout.SPLIT_CSV, layout.SPLIT_COLUMNS, splits)
    layout.write_csv_gz(out / layout.CHEXPERT_CSV, layout.CHEXPERT_COLUMNS, chexpert)
    return Summary(len(plans), len(metadata), num_subjects, by_split, normal, previews, unplaced)
