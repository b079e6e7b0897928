"""The view classifier applied to image files: `ViewPredictor` and `lit-medxchat classify-views`.

The model-free half (predictions, `fill_views` for prepare runs, the views CSV) is
`datamodules.view_fill`; this module loads the trained `ViewClassifier` (checkpoint or exported
folder) and satisfies its `FileViewPredictor` protocol. A prediction below the probability
threshold is not a view: the image stays unknown (view class OTHER, the generic sentence).

Images are decoded by content, exactly as `data prepare` stores them (any PIL format; grey, RGB,
RGBA, 8/16-bit -> 8-bit grey at the shard size), then letterboxed to the classifier's input as the
classifier DataModule does, so predictions match what the model saw in training.

    lit-medxchat classify-views --images DIR --model PATH --out views.csv [--threshold 0.8]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

from datamodules.view_fill import (
    DEFAULT_THRESHOLD,
    NOT_IMAGE_SUFFIXES,
    UNKNOWN,
    Failure,
    ViewPrediction,
    classifier_identity,
    image_files,
    write_views_csv,
)
from lit_medxchat.core.constants import VIEW_CLASSES


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
        from lit_medxchat.models.image_classifier import load_classifier

        path = Path(model)
        if not path.exists():
            raise FileNotFoundError(f"view classifier {path}: no such checkpoint file or exported folder")
        self.model = load_classifier(path, map_location=device)
        if self.model.kind != "view":
            raise ValueError(f"{path} is a {self.model.kind} classifier, not a view classifier")
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


# ---------------------------------------------------------------- lit-medxchat classify-views


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


__all__ = ["ViewPredictor", "build_parser", "main"]


if __name__ == "__main__":
    raise SystemExit(main())
