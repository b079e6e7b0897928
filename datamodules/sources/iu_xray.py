"""IU X-ray (Open-i, Indiana University) -> `CXRRecord`s.

Input: the Open-i report archive (`NLMCXR_reports.tgz`, members `ecgen-radiology/N.xml`) or its
extracted folder, and a folder of PNG images named by the XML's `parentImage id` (e.g.
`CXR1_1_IM-0001-3001.png`, as in `NLMCXR_png.tgz`). Each XML is one report of one patient:
`AbstractText Label="FINDINGS" / "IMPRESSION" / "COMPARISON"`, MeSH terms under `MeSH/major`
and `MeSH/minor`, and one `parentImage` per image.

Split (patient level, deterministic, documented in docs/data-preparation.md): the collection
has one report per patient, so the report id (`uId`, e.g. `CXR1`) stands for the patient;
`sha256("iu-xray:" + report id)` read as a fraction in [0, 1) puts it in train (< 0.7),
validate (< 0.8) or test, the 7:1:2 proportions used by earlier IU X-ray work.
Views: from `--views-csv` when given (columns `filename`/`image`/`image_id` and
`projection`/`view`/`ViewPosition`; `Frontal` counts as PA: these outpatient studies are
"PA and lateral"), else `OTHER` with an empty `view_position`, which `data prepare
--view-classifier` then fills (`datamodules.view_fill.fill_views`). Labels: our rule labeler on the
impression (else findings), as CheXpert did for MIMIC-CXR. The module declares itself to `data prepare`
as `SOURCE` (`datamodules.sources.registry`).
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from datamodules.records import CXRRecord, SourceScan
from datamodules.sources.common import labels_from_report, read_table
from datamodules.sources.registry import DataSource, SourceOption
from lit_medxchat.core.constants import VIEW_CLASSES, view_class

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLIT_BOUNDS: tuple[tuple[float, str], ...] = ((0.7, "train"), (0.8, "validate"), (1.0, "test"))
_ID_COLUMNS = ("filename", "image", "image_id", "dicom_id")
_VIEW_COLUMNS = ("projection", "view", "ViewPosition")
_IMAGE_NAME = re.compile(r"^(?:CXR)?(\d+)_(?:\d+_)?(IM-[0-9-]+)$")


def split_of_report(report_id: str) -> str:
    """The deterministic patient-level split of one IU X-ray report (see the module docstring)."""
    digest = hashlib.sha256(f"iu-xray:{report_id}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return next(split for bound, split in SPLIT_BOUNDS if fraction < bound)


def _iter_xml(reports: Path) -> Iterator[tuple[str, bytes]]:
    """(item name, bytes) of every `.xml` report in a folder or a (gzipped) tar archive, sorted by name."""
    if reports.is_dir():
        for path in sorted(reports.rglob("*.xml")):
            yield path.relative_to(reports).as_posix(), path.read_bytes()
    elif reports.is_file() and tarfile.is_tarfile(reports):
        with tarfile.open(reports, "r:*") as archive:
            members = sorted(
                (m for m in archive.getmembers() if m.isfile() and m.name.endswith(".xml")), key=lambda m: m.name
            )
            for member in members:
                handle = archive.extractfile(member)
                if handle is not None:
                    yield member.name, handle.read()
    else:
        raise FileNotFoundError(f"--reports {reports}: neither a folder nor a tar archive of ecgen-radiology/*.xml")


def _text(element: ElementTree.Element | None) -> str | None:
    if element is None:
        return None
    text = " ".join("".join(element.itertext()).split())
    return text or None


def parse_report(data: bytes) -> dict:
    """Report id, sections, MeSH terms and image ids of one Open-i XML; raises ElementTree.ParseError."""
    root = ElementTree.fromstring(data)
    uid = root.find("uId")
    report_id = uid.get("id", "") if uid is not None else ""
    sections: dict[str, str | None] = {"findings": None, "impression": None, "last_paragraph": None, "comparison": None}
    for abstract in root.iter("AbstractText"):
        label = (abstract.get("Label") or "").strip().lower()
        if label in ("findings", "impression", "comparison"):
            sections[label] = _text(abstract)
    mesh = [text for tag in ("major", "minor") for element in root.iterfind(f"MeSH/{tag}") if (text := _text(element))]
    images = [image.get("id", "") for image in root.iter("parentImage") if image.get("id")]
    return {"report_id": report_id, "sections": sections, "mesh": mesh, "images": images}


def _view_key(name: str) -> str | None:
    """`CXR1_1_IM-0001-4001` and Kaggle's `1_IM-0001-4001` -> `1/IM-0001-4001` (report number + image part)."""
    match = _IMAGE_NAME.match(name)
    return f"{match.group(1)}/{match.group(2)}" if match else None


def read_views_csv(path: str | Path) -> dict[str, str]:
    """Image name (and `_view_key`) -> raw projection/view value from a CSV such as `indiana_projections.csv`."""
    path = Path(path)
    rows = list(read_table(path, ()))
    columns = rows[0][1].keys() if rows else []
    id_column = next((c for c in _ID_COLUMNS if c in columns), None)
    view_column = next((c for c in _VIEW_COLUMNS if c in columns), None)
    if rows and (id_column is None or view_column is None):
        raise ValueError(f"--views-csv {path}: needs an id column {_ID_COLUMNS} and a view column {_VIEW_COLUMNS}")
    views: dict[str, str] = {}
    for _, row in rows:
        name = Path(row[id_column]).name
        for suffix in (".dcm.png", ".png", ".jpg", ".dcm"):
            name = name.removesuffix(suffix)
        views[name] = row[view_column]
        if (key := _view_key(name)) is not None:
            views.setdefault(key, row[view_column])
    return views


def view_for(views: dict[str, str], image_id: str) -> str:
    """The raw view of an image from `read_views_csv`'s table, "" when it is not listed."""
    if image_id in views:
        return views[image_id]
    key = _view_key(image_id)
    return views.get(key, "") if key is not None else ""


def iu_view(raw: str) -> str:
    """A raw IU projection value -> one of VIEW_CLASSES (`Frontal` -> PA, see the module docstring)."""
    value = raw.strip().upper()
    return "PA" if value == "FRONTAL" else view_class(value)


def load_iu_xray(
    reports: str | Path, images: str | Path, views_csv: str | Path | None = None, progress: bool = True
) -> SourceScan:
    """Plan the samples of the IU X-ray collection; every XML and every image is a record or skipped."""
    reports, images = Path(reports), Path(images)
    if not images.is_dir():
        raise FileNotFoundError(f"--images {images} is not a folder of Open-i PNG images")
    scan = SourceScan(records=[], skipped={}, converted={}, info={})
    image_items: dict[str, str] = {}
    for dirpath, dirnames, files in os.walk(images):
        dirnames.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_SUFFIXES):
                item = Path(dirpath, name).relative_to(images).as_posix()
                stem = Path(name).stem
                if stem in image_items:
                    scan.skip(None, item, "duplicate-id", f"image id {stem} also at {image_items[stem]}")
                else:
                    image_items[stem] = item
    views = read_views_csv(views_csv) if views_csv is not None else {}
    claimed: set[str] = set()
    planned: list[dict] = []
    num_reports = 0
    for xml_item, data in tqdm(
        _iter_xml(reports), desc="read reports", unit="report", leave=False, disable=not progress
    ):
        num_reports += 1
        try:
            report = parse_report(data)
        except ElementTree.ParseError as error:
            scan.skip(None, xml_item, "unreadable-xml", str(error))
            continue
        report_id = report["report_id"] or Path(xml_item).stem
        split = split_of_report(report_id)
        if not report["images"]:
            scan.skip(split, xml_item, "report-without-images", f"report {report_id} lists no parentImage")
            continue
        sections = report["sections"]
        conclusion = sections["impression"] or sections["findings"]
        labels = labels_from_report(conclusion) if conclusion else None
        for image_id in report["images"]:
            item = image_items.get(image_id, f"{image_id}.png")
            if image_id in claimed:
                scan.skip(split, f"{xml_item}:{image_id}", "duplicate-id", f"image {image_id} in two reports")
                continue
            claimed.add(image_id)
            if image_id not in image_items:
                scan.skip(split, item, "missing-image", f"{xml_item} names {image_id}, not found under {images}")
                continue
            if "." in image_id or "/" in image_id:
                scan.skip(split, item, "bad-id", f"image id {image_id!r} cannot be a WebDataset key")
                continue
            if labels is None:
                scan.skip(split, item, "no-usable-section", f"{xml_item} has neither FINDINGS nor IMPRESSION text")
                continue
            raw_view = view_for(views, image_id)
            view = iu_view(raw_view) if raw_view else "OTHER"
            if view == "OTHER":
                scan.convert(split, "view-empty" if not raw_view else "view-other")
            scan.convert(split, "labels-from-labeler")
            planned.append(
                dict(
                    dicom_id=image_id,
                    study_id=report_id,
                    subject_id=report_id,
                    split=split,
                    view=view,
                    view_position=raw_view,
                    image_path=str(images / image_items[image_id]),
                    image_item=image_items[image_id],
                    sections=sections,
                    labels=labels,
                    source="iu-xray",
                    extra={"mesh": report["mesh"]},
                )
            )
    for image_id, item in sorted(image_items.items()):
        if image_id not in claimed:
            scan.skip(None, item, "no-report", f"no XML report names image {image_id}")
    by_study: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for fields in planned:
        by_study[fields["study_id"]].append((fields["dicom_id"], fields["view"]))
    scan.records = [CXRRecord(**f, study_images=tuple(sorted(by_study[f["study_id"]]))) for f in planned]
    scan.info.update(
        kind="iu-xray",
        reports=str(reports.resolve()),
        images=str(images.resolve()),
        views_csv=str(Path(views_csv).resolve()) if views_csv is not None else None,
        reports_read=num_reports,
        images_on_disk=len(image_items),
        split_rule="sha256('iu-xray:' + report id) -> [0,1): train < 0.7 <= validate < 0.8 <= test",
        view_classes=list(VIEW_CLASSES),
    )
    return scan


def _has_views_csv(arguments: Mapping[str, Any]) -> bool:
    """With a views CSV, its views win and the classifier's are compared with them."""
    return arguments.get("views_csv") is not None


SOURCE = DataSource(
    name="iu-xray",
    help="the Open-i Indiana University collection",
    options=(
        SourceOption("--reports", "NLMCXR_reports.tgz or its folder (ecgen-radiology/*.xml)", required=True),
        SourceOption("--images", "folder of the PNG images (NLMCXR_png)", required=True),
        SourceOption("--views-csv", "CSV with image file names and projections (optional)"),
    ),
    scan=load_iu_xray,
    view_source_name="csv",
    compares_views=_has_views_csv,
)
