"""Views for images without view metadata: the view classifier, applied to files and to prepare runs.

The paper prepends "PA view of the chest was obtained." (or AP / lateral) to every report; IU X-ray
ships no view metadata and some MIMIC-CXR images lack `ViewPosition`, so a trained view classifier
(`ViewClassifier` checkpoint or exported folder) fills them in. A prediction below the probability
threshold is not a view: the image stays unknown (view class OTHER, the generic sentence) rather
than being given a guess that would then be written into its report and dialogues.

Images are decoded by content, exactly as `data prepare` stores them (any PIL format; grey, RGB,
RGBA, 8/16-bit -> 8-bit grey at the shard size), then letterboxed to the classifier's input as the
classifier DataModule does, so predictions match what the model saw in training.

    lit-medxchat classify-views --images DIR --model PATH --out views.csv [--threshold 0.8]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

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


class ViewPredictor:
    """A loaded view classifier with its threshold, predicting files in batches.

    Args:
        model: a `ViewClassifier` Lightning checkpoint or a folder written by `export_pretrained`.
        threshold: the lowest top-class probability accepted as a view, in (0, 1].
        image_size: the longest side images are stored at before the classifier's own resize
            (that of the shards, `data prepare --image-size`, 512 by default).
        batch_size: images per forward pass.
        device: torch device of the model ("cpu", "cuda").
    """

    def __init__(
        self,
        model: str | Path,
        threshold: float = DEFAULT_THRESHOLD,
        image_size: int = 512,
        batch_size: int = 32,
        device: str = "cpu",
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"view threshold {threshold}: give a probability in (0, 1]")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: give at least 1")
        from lit_medxchat.models.classifiers import ViewClassifier, load_classifier

        path = Path(model)
        if not path.exists():
            raise FileNotFoundError(f"view classifier {path}: no such checkpoint file or exported folder")
        self.model = load_classifier(path, map_location=device)
        if not isinstance(self.model, ViewClassifier):
            raise ValueError(f"{path} is a {type(self.model).__name__}, not a view classifier")
        self.threshold = float(threshold)
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.identity = classifier_identity(path)

    def pixels(self, path: str | Path) -> np.ndarray:
        """The classifier's input for one file: a letterboxed (S, S) uint8 grey array; raises ImageError."""
        from datamodules.sources.images import encode_cxr_image
        from datamodules.transforms import decode_grey, square_grey

        size = self.model.image_size
        stored = encode_cxr_image(path, self.image_size)
        return square_grey(decode_grey(stored.jpeg, size), size)

    def predict_arrays(self, arrays: list[np.ndarray]) -> list[ViewPrediction]:
        """Predictions for letterboxed uint8 arrays (as `pixels` returns them), in order."""
        import torch

        if not arrays:
            return []
        batch = torch.from_numpy(np.stack(arrays)).unsqueeze(1).float().div_(255.0)
        probabilities = self.model.predict_proba(batch).cpu().numpy()
        return [self._prediction(row) for row in probabilities]

    def _prediction(self, row: np.ndarray) -> ViewPrediction:
        top = int(row.argmax())
        probability = float(row[top])
        predicted = VIEW_CLASSES[top]
        view = predicted if probability >= self.threshold else UNKNOWN
        return ViewPrediction(view, predicted, probability, dict(zip(VIEW_CLASSES, map(float, row), strict=True)))

    def predict_files(
        self, paths: Iterable[str | Path], progress: bool = True, total: int | None = None
    ) -> Iterator[tuple[Path, ViewPrediction | Failure]]:
        """(path, prediction or failure) for every file, in order; an unreadable file never stops the run."""
        from tqdm.auto import tqdm

        from datamodules.sources.images import ImageError

        pending: list[tuple[Path, np.ndarray]] = []
        with tqdm(total=total, desc="classify views", unit="image", disable=not progress) as bar:
            for path in map(Path, paths):
                try:
                    pending.append((path, self.pixels(path)))
                except ImageError as error:
                    # Flush first so that results stay in input order.
                    yield from self._flush(pending, bar)
                    pending = []
                    bar.update(1)
                    yield path, Failure(error.reason, error.detail)
                    continue
                if len(pending) >= self.batch_size:
                    yield from self._flush(pending, bar)
                    pending = []
            yield from self._flush(pending, bar)

    def _flush(self, pending: list[tuple[Path, np.ndarray]], bar) -> Iterator[tuple[Path, ViewPrediction]]:
        predictions = self.predict_arrays([array for _, array in pending])
        bar.update(len(pending))
        yield from ((path, prediction) for (path, _), prediction in zip(pending, predictions, strict=True))


# ---------------------------------------------------------------- prepare runs


def fill_views(
    scan: SourceScan,
    predictor: ViewPredictor,
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


# ---------------------------------------------------------------- lit-medxchat classify-views


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lit-medxchat classify-views",
        description="Predict the view (PA / AP / LATERAL / OTHER) of every image in a folder with a trained "
        "view classifier; below --threshold the view is 'unknown'. Writes a CSV that "
        "`lit-medxchat data prepare iu-xray --views-csv` reads.",
    )
    parser.add_argument("--images", required=True, help="folder of images (searched recursively; any name)")
    parser.add_argument("--model", required=True, help="view-classifier checkpoint (.ckpt) or exported folder")
    parser.add_argument("--out", required=True, help="CSV to write (filename, view, probability, ...)")
    parser.add_argument(
        "--threshold", type=float, default=DEFAULT_THRESHOLD, help="lowest accepted probability (0.8)"
    )
    parser.add_argument("--image-size", type=int, default=512, help="stored size before the model's resize (512)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (32)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    return parser


def main(argv: list[str] | None = None, stream: TextIO | None = None) -> int:
    """Classify a folder; 0 on success (unreadable images are listed, not fatal), 2 on unusable input."""
    args = build_parser().parse_args(argv)
    stream = stream or sys.stdout
    images = Path(args.images)
    try:
        if not images.is_dir():
            raise FileNotFoundError(f"--images {images} is not a folder")
        predictor = ViewPredictor(args.model, args.threshold, args.image_size, args.batch_size, args.device)
    except (FileNotFoundError, ValueError) as error:
        print(f"lit-medxchat classify-views: {error}", file=sys.stderr)
        return 2
    files, ignored = image_files(images)
    results = predictor.predict_files(files, progress=not args.no_progress, total=len(files))
    rows = ((path.relative_to(images).as_posix(), result) for path, result in results)
    views, failures, details = write_views_csv(rows, Path(args.out))
    counts = ", ".join(f"{name} {views[name]}" for name in (*VIEW_CLASSES, UNKNOWN) if views[name])
    print(f"classified {sum(views.values())} images into {args.out}: {counts or 'none'}", file=stream)
    if views[UNKNOWN]:
        print(f"unknown: {views[UNKNOWN]} below probability {predictor.threshold}", file=stream)
    if failures:
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(failures.items()))
        print(f"skipped {sum(failures.values())} unreadable files ({reasons}), e.g. " + "; ".join(details), file=stream)
    if ignored:
        suffixes = ", ".join(sorted(NOT_IMAGE_SUFFIXES))
        print(f"left out {ignored} files named as reports, tables or archives ({suffixes})", file=stream)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
