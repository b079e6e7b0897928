"""MIMIC-CXR-JPG (+ reports) -> `CXRRecord`s: CSVs joined by id, reports sectioned, images found on disk.

Layout (docs/mimic-cxr-format.md): `ROOT/files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg`, the metadata,
split and CheXpert tables as `.csv.gz` (or `.csv`) in ROOT, and the reports either as
`mimic-cxr-reports.zip` (members `files/pXX/pSUBJECT/sSTUDY.txt`, any leading folder), as an
extracted tree, or inside ROOT/files (the built-in dataset). Columns are selected by name.

Every image on disk and every metadata row ends up either as a record or as a skipped item with
a reason; conversions (view unknown -> OTHER, labels from the labeler, split from the subject's
other images) are counted per split. Images whose `ViewPosition` is empty keep an empty
`view_position`; `data prepare --view-classifier` predicts their view (`datamodules.view_fill`).
The module declares itself to `data prepare` as `SOURCE` (`datamodules.sources.registry`).
"""

from __future__ import annotations

import os
import re
import zipfile
from collections import defaultdict
from pathlib import Path

from tqdm.auto import tqdm

from datamodules.records import SPLITS, CXRRecord, SourceScan
from datamodules.sources.common import labels_from_report, normalise_id, parse_label, read_table
from datamodules.sources.registry import DataSource, SourceOption
from datamodules.sources.report_sections import ReportSections, extract_sections
from lit_medxchat.core.constants import CHEXPERT_LABELS, view_class

METADATA = "mimic-cxr-2.0.0-metadata"
SPLIT = "mimic-cxr-2.0.0-split"
CHEXPERT = "mimic-cxr-2.0.0-chexpert"
IMAGE_SUFFIXES = (".jpg", ".jpeg")
_REPORT_NAME = re.compile(r"(?:^|/)p\d+/p(\d+)/s(\d+)\.txt$")
_SPLIT_ALIASES = {"val": "validate", "valid": "validate", "validation": "validate"}


def find_table(root: Path, stem: str, required: bool = True) -> Path | None:
    """`ROOT/<stem>.csv.gz` or `ROOT/<stem>.csv`; raises FileNotFoundError naming both when required."""
    for name in (f"{stem}.csv.gz", f"{stem}.csv"):
        if (root / name).is_file():
            return root / name
    if required:
        raise FileNotFoundError(
            f"{root}: neither {stem}.csv.gz nor {stem}.csv found; --root must be the MIMIC-CXR-JPG folder "
            "that holds files/ and the CSV tables"
        )
    return None


class ReportIndex:
    """Study id -> report text, from a reports zip, an extracted tree, or ROOT/files."""

    def __init__(self, location: Path | None) -> None:
        self.location = location
        self._zip: zipfile.ZipFile | None = None
        self.items: dict[str, str] = {}  # study_id -> member name or path relative to location
        self.duplicates: list[tuple[str, str]] = []  # (study_id, ignored item)
        if location is None:
            return
        if location.is_file():
            if not zipfile.is_zipfile(location):
                raise ValueError(
                    f"--reports {location}: not a zip archive; give mimic-cxr-reports.zip or the folder it (or a "
                    ".tar.gz of the reports) was extracted to"
                )
            self._zip = zipfile.ZipFile(location)
            names = sorted(self._zip.namelist())
        elif location.is_dir():
            names = sorted(
                str(Path(dirpath, name).relative_to(location))
                for dirpath, _, files in os.walk(location)
                for name in files
                if name.startswith("s") and name.endswith(".txt")
            )
        else:
            raise FileNotFoundError(f"--reports {location} does not exist")
        for name in names:
            match = _REPORT_NAME.search(name.replace(os.sep, "/"))
            if match is None:
                continue
            study_id = match.group(2)
            if study_id in self.items:
                self.duplicates.append((study_id, name))
            else:
                self.items[study_id] = name

    def read(self, study_id: str) -> str | None:
        """The report text of a study, or None when the study has no report."""
        name = self.items.get(study_id)
        if name is None:
            return None
        data = self._zip.read(name) if self._zip is not None else (self.location / name).read_bytes()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")

    def item(self, study_id: str) -> str:
        return self.items.get(study_id, f"s{study_id}.txt")


def _scan_images(root: Path, progress: bool = True) -> list[str]:
    """Every image file under ROOT/files, as sorted paths relative to ROOT with '/' separators."""
    files_dir = root / "files"
    found = []
    for dirpath, dirnames, files in tqdm(
        os.walk(files_dir), desc="scan images", unit="dir", leave=False, disable=not progress
    ):
        dirnames.sort()
        for name in files:
            if name.lower().endswith(IMAGE_SUFFIXES):
                found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


def _default_reports(root: Path, patients_to_check: int = 50) -> Path | None:
    """ROOT/files when its patient folders hold `sNNN.txt` reports (the built-in dataset, or reports
    unpacked in place); only the first `patients_to_check` patient folders are looked at, so a
    370k-image tree without reports is not walked a second time."""
    files_dir = root / "files"
    patients = (patient for group in sorted(files_dir.glob("p*")) for patient in sorted(group.glob("p*")))
    for checked, patient in enumerate(patients):
        if checked >= patients_to_check:
            break
        if any(patient.glob("s*.txt")):
            return files_dir
    return None


def load_mimic_cxr(root: str | Path, reports: str | Path | None = None, progress: bool = True) -> SourceScan:
    """Plan the samples of a MIMIC-CXR-JPG tree; see the module docstring for the rules."""
    root = Path(root)
    if not (root / "files").is_dir():
        raise FileNotFoundError(f"--root {root}: no files/ folder; point --root at the MIMIC-CXR-JPG folder")
    metadata_path = find_table(root, METADATA)
    split_path = find_table(root, SPLIT)
    chexpert_path = find_table(root, CHEXPERT, required=False)
    report_location = Path(reports) if reports is not None else _default_reports(root)
    report_index = ReportIndex(report_location)
    if not report_index.items:
        raise FileNotFoundError(
            f"no report files (files/pXX/pSUBJECT/sSTUDY.txt) found in {report_location or root / 'files'}; "
            "pass --reports with mimic-cxr-reports.zip or the folder it was extracted to"
        )
    scan = SourceScan(records=[], skipped={}, converted={}, info={})

    split_of_image: dict[str, str] = {}
    split_of_subject: dict[str, str] = {}
    for number, row in read_table(split_path, ("dicom_id", "subject_id", "split")):
        value = _SPLIT_ALIASES.get(row["split"].lower(), row["split"].lower())
        dicom_id = row["dicom_id"]
        if value not in SPLITS:
            scan.skip(
                None, f"{split_path.name}:row {number}", "unknown-split", f"split {row['split']!r} for {dicom_id}"
            )
            continue
        if dicom_id in split_of_image:
            scan.skip(value, f"{split_path.name}:row {number}", "duplicate-id", f"second split row for {dicom_id}")
            continue
        split_of_image[dicom_id] = value
        split_of_subject.setdefault(normalise_id(row["subject_id"]), value)

    labels_of_study: dict[str, dict[str, float | None]] = {}
    if chexpert_path is not None:
        for number, row in read_table(chexpert_path, ("study_id", *CHEXPERT_LABELS)):
            study_id = normalise_id(row["study_id"])
            item = f"{chexpert_path.name}:row {number}"
            if study_id in labels_of_study:
                scan.skip(None, item, "duplicate-id", f"second label row for study {study_id}; first kept")
                continue
            try:
                labels_of_study[study_id] = {name: parse_label(row[name]) for name in CHEXPERT_LABELS}
            except ValueError as error:
                scan.skip(None, item, "bad-label-row", f"study {study_id}: {error}; labels from the labeler instead")

    on_disk = set(_scan_images(root, progress))
    claimed: set[str] = set()
    sections_cache: dict[str, ReportSections | None] = {}
    section_dicts: dict[str, dict[str, str | None]] = {}  # one dict per study, shared by its images
    planned: list[dict] = []
    seen: set[str] = set()
    # Only the columns we use: 377k full rows would hold ~0.5 GB of strings.
    rows = [
        (number, row["dicom_id"], normalise_id(row["subject_id"]), normalise_id(row["study_id"]), row["ViewPosition"])
        for number, row in read_table(metadata_path, ("dicom_id", "subject_id", "study_id", "ViewPosition"))
    ]
    for number, dicom_id, subject_id, study_id, view_position in tqdm(
        rows, desc="plan samples", unit="image", leave=False, disable=not progress
    ):
        item = f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg"
        split = split_of_image.get(dicom_id)
        if dicom_id in seen:
            scan.skip(
                split, f"{metadata_path.name}:row {number}", "duplicate-id", f"second metadata row for {dicom_id}"
            )
            continue
        seen.add(dicom_id)
        if split is None and subject_id in split_of_subject:
            split = split_of_subject[subject_id]
            scan.convert(split, "split-from-subject")
        if not (dicom_id and subject_id.isdigit() and study_id.isdigit()) or "." in dicom_id or "/" in dicom_id:
            scan.skip(
                split, f"{metadata_path.name}:row {number}", "bad-id", f"ids {dicom_id!r}/{subject_id!r}/{study_id!r}"
            )
            continue
        if item not in on_disk:
            scan.skip(split, item, "missing-image", "listed in the metadata but not under files/")
            continue
        claimed.add(item)
        if split is None:
            scan.skip(None, item, "no-split", f"{dicom_id} is in no row of {split_path.name}")
            continue
        if study_id not in sections_cache:
            text = report_index.read(study_id)
            sections_cache[study_id] = None if text is None else extract_sections(text)
        sections = sections_cache[study_id]
        if sections is None:
            scan.skip(split, item, "no-report", f"no report s{study_id}.txt in {report_location}")
            continue
        if not sections.conclusion:
            scan.skip(split, item, "no-usable-section", f"{report_index.item(study_id)} has no findings/impression")
            continue
        view = view_class(view_position)
        if view == "OTHER":
            scan.convert(split, "view-empty" if not view_position else "view-other")
        if study_id not in labels_of_study:
            labels_of_study[study_id] = labels_from_report(sections.conclusion)
            scan.convert(split, "labels-from-labeler")
        planned.append(
            dict(
                dicom_id=dicom_id,
                study_id=study_id,
                subject_id=subject_id,
                split=split,
                view=view,
                view_position=view_position,
                image_path=str(root / item),
                image_item=item,
                sections=section_dicts.setdefault(study_id, sections.as_dict()),
                labels=labels_of_study[study_id],
                source="mimic-cxr",
            )
        )
    for item in sorted(on_disk - claimed):
        stem = Path(item).stem
        scan.skip(split_of_image.get(stem), item, "not-in-metadata", f"no row for {stem} in {metadata_path.name}")
    for study_id, name in report_index.duplicates:
        scan.info.setdefault("duplicate_reports_ignored", []).append({"study_id": study_id, "item": name})

    scan.records = _with_study_images(planned)
    used_studies = {record.study_id for record in scan.records}
    scan.info.update(
        kind="mimic-cxr",
        root=str(root.resolve()),
        reports=str(report_location.resolve()) if report_location else None,
        images_on_disk=len(on_disk),
        metadata_rows=len(rows),
        reports_found=len(report_index.items),
        reports_unused=len(set(report_index.items) - used_studies),
    )
    return scan


def _with_study_images(planned: list[dict]) -> list[CXRRecord]:
    """Records with `study_images` filled from the planned images of the same study."""
    by_study: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for fields in planned:
        by_study[fields["study_id"]].append((fields["dicom_id"], fields["view"]))
    return [CXRRecord(**fields, study_images=tuple(sorted(by_study[fields["study_id"]]))) for fields in planned]


SOURCE = DataSource(
    name="mimic-cxr",
    help="a MIMIC-CXR-JPG tree (or the built-in dataset) with its reports",
    options=(
        SourceOption("--root", "folder with files/ and the mimic-cxr-2.0.0-*.csv.gz tables", required=True),
        SourceOption(
            "--reports", "mimic-cxr-reports.zip or the folder it was extracted to (default: reports under ROOT/files)"
        ),
    ),
    scan=load_mimic_cxr,
    view_source_name="metadata",  # a view classifier fills only the images whose ViewPosition is empty
)
