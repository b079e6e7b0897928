"""`lit-medxchat data prepare {mimic-cxr,iu-xray}`: argument parsing only; the work is in `datamodules.prepare`."""

from __future__ import annotations

import argparse
import os
import sys

from datamodules.prepare import PrepareOptions, ViewClassifierOptions, prepare_iu_xray, prepare_mimic_cxr


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder; <out>/<split>/shard-*.tar + manifest.json")
    parser.add_argument("--image-size", type=int, default=512, help="longest side of stored images, pixels (512)")
    parser.add_argument("--workers", type=int, default=_default_workers(), help="decoding processes (all CPUs)")
    parser.add_argument("--samples-per-shard", type=int, default=1000, help="images per tar shard (1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the rule-based dialogue phrasing (0)")
    parser.add_argument("--llm-endpoint", default=None, help="OpenAI-compatible chat URL for dialogues (optional)")
    parser.add_argument("--llm-model", default="gpt-4o", help="model name sent to --llm-endpoint (gpt-4o)")
    parser.add_argument("--llm-timeout", type=float, default=60.0, help="seconds per LLM request before falling back")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")
    parser.add_argument(
        "--view-classifier",
        default=None,
        help="view-classifier checkpoint or exported folder: predicts the views the source lacks (optional)",
    )
    parser.add_argument(
        "--view-threshold", type=float, default=0.8, help="below this probability a predicted view stays unknown (0.8)"
    )
    parser.add_argument("--view-device", default="cpu", help="torch device of the view classifier (cpu)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lit-medxchat data prepare",
        description="Convert MIMIC-CXR-JPG or IU X-ray into WebDataset shards (docs/data-preparation.md). "
        "Rerunning the same command after an interruption reuses finished shards.",
    )
    sources = parser.add_subparsers(dest="source", required=True)
    mimic = sources.add_parser("mimic-cxr", help="a MIMIC-CXR-JPG tree (or the built-in dataset) with its reports")
    mimic.add_argument("--root", required=True, help="folder with files/ and the mimic-cxr-2.0.0-*.csv.gz tables")
    mimic.add_argument(
        "--reports",
        default=None,
        help="mimic-cxr-reports.zip or the folder it was extracted to (default: reports under ROOT/files)",
    )
    _add_common(mimic)
    iu = sources.add_parser("iu-xray", help="the Open-i Indiana University collection")
    iu.add_argument("--reports", required=True, help="NLMCXR_reports.tgz or its folder (ecgen-radiology/*.xml)")
    iu.add_argument("--images", required=True, help="folder of the PNG images (NLMCXR_png)")
    iu.add_argument("--views-csv", default=None, help="CSV with image file names and projections (optional)")
    _add_common(iu)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv`, prepare the shards, print the summary; 0 on success, 2 on unusable input."""
    args = build_parser().parse_args(argv)
    try:
        options = PrepareOptions(
            image_size=args.image_size,
            samples_per_shard=args.samples_per_shard,
            workers=args.workers,
            seed=args.seed,
            llm_endpoint=args.llm_endpoint,
            llm_model=args.llm_model,
            llm_timeout_s=args.llm_timeout,
            progress=not args.no_progress,
        )
        views = None
        if args.view_classifier is not None:
            views = ViewClassifierOptions(args.view_classifier, args.view_threshold, device=args.view_device)
        if args.source == "mimic-cxr":
            prepare_mimic_cxr(args.root, args.out, reports=args.reports, options=options, views=views)
        else:
            prepare_iu_xray(args.reports, args.images, args.out, views_csv=args.views_csv, options=options, views=views)
    except (FileNotFoundError, ValueError) as error:
        print(f"lit-medxchat data prepare {args.source}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
