"""Views for records without view metadata: what a view prediction is, and how a prepare run uses one.

The paper prepends "PA view of the chest was obtained." (or AP / lateral) to every report; IU X-ray
ships no view metadata and some MIMIC-CXR images lack `ViewPosition`, so a trained view classifier
fills them in. A prediction below the probability threshold is not a view: the image stays unknown
(view class OTHER, the generic sentence) rather than being given a guess that would then be
written into its report and dialogues.

This module holds everything about those predictions that needs no model: the prediction and
failure records, `fill_views` (predictions into a `SourceScan`), the console summary, and the
views CSV of `lit-medxchat classify-views`. It lives with the data so that data preparation
depends only on the `FileViewPredictor` protocol; the model that satisfies it
(`lit_medxchat.inference.classify_views.ViewPredictor`) is built above the model layer and
handed in.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lit_medxchat.core.constants import VIEW_CLASSES

if TYPE_CHECKING:
    from datamodules.records import SourceScan

UNKNOWN = "unknown"
DEFAULT_THRESHOLD = 0.8
# Files that are never radiographs in the folders users point at (reports, tables, archives);
# they are counted, not decoded. Everything else is decoded by content whatever its name.
NOT_IMAGE_SUFFIXES = frozenset({".txt", ".csv", ".gz", ".json", ".xml", ".html", ".md", ".zip", ".tgz", ".tar"})
CSV_COLUMNS = ("filename", "view", "probability", "predicted", *(f"p_{name}" for name in VIEW_CLASSES), "error")


@dataclass(frozen=True)
class ViewPrediction:
    """One image's prediction: `view` is a `VIEW_CLASSES` name, or "unknown" below the threshold.

    `predicted` is the most probable class whatever its probability; `probability` is its softmax
    probability; `probabilities` holds all four.
    """

    view: str
    predicted: str
    probability: float
    probabilities: dict[str, float]

    @property
    def view_class(self) -> str:
        """The view class a record gets: the prediction, or OTHER (generic sentence) when unknown."""
        return "OTHER" if self.view == UNKNOWN else self.view


@dataclass(frozen=True)
class Failure:
    """An image the classifier could not read: `reason` is a slug (corrupt-image, truncated-image, ...)."""

    reason: str
    detail: str


class FileViewPredictor(Protocol):
    """What `fill_views` needs of a view classifier: predictions for files, its threshold and identity.

    `identity` names the classifier in every manifest (`path`, and `sha256` of its weights, see
    `classifier_identity`); `predict_files` yields one result per path, in order, and turns an
    unreadable file into a `Failure` instead of raising.
    """

    threshold: float
    identity: dict[str, str]

    def predict_files(
        self, paths: Iterable[str | Path], progress: bool = True, total: int | None = None
    ) -> Iterator[tuple[Path, ViewPrediction | Failure]]: ...


def classifier_identity(path: str | Path) -> dict[str, str]:
    """Which classifier made a prediction: its resolved path and the sha256 of its weights file."""
    path = Path(path).resolve()
    weights = path
    if path.is_dir():
        candidates = [path / name for name in ("model.safetensors", "pytorch_model.bin") if (path / name).is_file()]
        weights = candidates[0] if candidates else path / "config.json"
    digest = hashlib.sha256()
    with open(weights, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "sha256": digest.hexdigest()}


# ---------------------------------------------------------------- prepare runs


def fill_views(
    scan: SourceScan,
    predictor: FileViewPredictor,
    compare: bool = False,
    source_name: str = "csv",
    progress: bool = True,
) -> dict[str, Any]:
    """Give every record of `scan` without source view metadata the classifier's view, in place.

    Records whose `view_position` is empty (IU X-ray without a views CSV, MIMIC-CXR images without
    `ViewPosition`) get the predicted view, or OTHER when the prediction is below the threshold,
    and `view_source`, `view_probability`, `view_predicted` and `view_classifier` in their metadata.
    Records with a source view keep it (the CSV or metadata wins; `view_source` is then
    `source_name`); with `compare`, they are classified too and the agreement is reported.
    Counts go to `scan.converted` per split (`view-from-classifier`, `view-unknown-below-threshold`,
    `view-classifier-failed`) and the summary (returned, and stored as `scan.info["view_classifier"]`)
    to every manifest.
    """
    chosen = [k for k, record in enumerate(scan.records) if compare or not record.view_position]
    results = predictor.predict_files(
        (scan.records[k].image_path for k in chosen), progress=progress, total=len(chosen)
    )
    predicted: Counter[str] = Counter()
    compared = agreed = frontal_lateral_agreed = failed = 0
    for k, (_, result) in zip(chosen, results, strict=True):
        record = scan.records[k]
        from_source = bool(record.view_position)
        if isinstance(result, Failure):
            failed += 1
            if not from_source:
                scan.convert(record.split, "view-classifier-failed")
            continue  # the prepare run skips the unreadable image itself, with the same reason
        extra = dict(record.extra)
        notes = {
            "view_probability": round(result.probability, 6),
            "view_predicted": result.predicted,
            "view_classifier": predictor.identity["sha256"][:16],
        }
        if from_source:
            extra.update(view_source=source_name, **{f"classifier_{key}": value for key, value in notes.items()})
            if result.view != UNKNOWN and record.view != "OTHER":
                compared += 1
                agreed += result.view == record.view
                frontal_lateral_agreed += (result.view == "LATERAL") == (record.view == "LATERAL")
            scan.records[k] = dataclasses.replace(record, extra=extra)
            continue
        predicted[result.view] += 1
        scan.convert(record.split, "view-from-classifier" if result.view != UNKNOWN else "view-unknown-below-threshold")
        extra.update(view_source="classifier", **notes)
        scan.records[k] = dataclasses.replace(record, view=result.view_class, extra=extra)
    _restudy(scan)
    summary: dict[str, Any] = {
        **predictor.identity,
        "threshold": predictor.threshold,
        "predicted": {name: predicted[name] for name in (*VIEW_CLASSES, UNKNOWN)},
        "failed": failed,
    }
    if compare:
        summary["compared_with_source"] = compared
        summary["agreement"] = round(agreed / compared, 4) if compared else None
        summary["frontal_lateral_agreement"] = round(frontal_lateral_agreed / compared, 4) if compared else None
    scan.info["view_classifier"] = summary
    return summary


def _restudy(scan: SourceScan) -> None:
    """Refresh every record's `study_images` (its study's (dicom_id, view) pairs) after views changed."""
    by_study: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for record in scan.records:
        by_study[record.study_id].append((record.dicom_id, record.view))
    scan.records = [
        dataclasses.replace(record, study_images=tuple(sorted(by_study[record.study_id]))) for record in scan.records
    ]


def describe(summary: dict[str, Any]) -> str:
    """One line for the console: predictions per view, unknowns, failures and the agreement."""
    counts = ", ".join(f"{name} {count}" for name, count in summary["predicted"].items() if count)
    line = (
        f"view classifier ({Path(summary['path']).name}, threshold {summary['threshold']}): "
        f"{counts or 'no image without a view'}; unreadable {summary['failed']}"
    )
    if "compared_with_source" in summary:
        compared = summary["compared_with_source"]
        if compared:
            line += (
                f"; agreement with the source views {summary['agreement']:.1%} of {compared} "
                f"(frontal/lateral {summary['frontal_lateral_agreement']:.1%})"
            )
        else:
            line += "; no confident prediction to compare with the source views"
    return line


# ---------------------------------------------------------------- views CSV (lit-medxchat classify-views)


def image_files(root: Path) -> tuple[list[Path], int]:
    """Every file under `root` (sorted, hidden ones left out) that may be an image, and how many
    files were left out as reports/tables/archives by their suffix."""
    files, ignored = [], 0
    for dirpath, dirnames, names in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in NOT_IMAGE_SUFFIXES:
                ignored += 1
            else:
                files.append(Path(dirpath, name))
    return files, ignored


def write_views_csv(
    rows: Iterable[tuple[str, ViewPrediction | Failure]], out: Path
) -> tuple[Counter[str], Counter[str], list[str]]:
    """Write one row per image (readable by `data prepare iu-xray --views-csv`); returns
    (views counted, failure reasons counted, first failure details)."""
    views: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    details: list[str] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with open(partial, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for name, result in rows:
            if isinstance(result, Failure):
                failures[result.reason] += 1
                if len(details) < 3:
                    details.append(f"{name}: {result.detail}")
                writer.writerow([name, "", "", "", *("" for _ in VIEW_CLASSES), result.reason])
                continue
            views[result.view] += 1
            probabilities = (f"{result.probabilities[n]:.4f}" for n in VIEW_CLASSES)
            writer.writerow([name, result.view, f"{result.probability:.4f}", result.predicted, *probabilities, ""])
    partial.replace(out)
    return views, failures, details


__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_THRESHOLD",
    "NOT_IMAGE_SUFFIXES",
    "UNKNOWN",
    "Failure",
    "FileViewPredictor",
    "ViewPrediction",
    "classifier_identity",
    "describe",
    "fill_views",
    "image_files",
    "write_views_csv",
]
