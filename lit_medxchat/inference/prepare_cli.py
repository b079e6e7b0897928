"""`lit-medxchat data prepare <source>`: argument parsing, and the view classifier when one is asked for.

One sub-command per source in `datamodules.sources.registry`, each with the source's own options
and the shard options common to all. The work is `datamodules.prepare.prepare_source`.

This front end sits above the model layer, not in `datamodules`, because `--view-classifier PATH`
loads a trained model (`ViewPredictor`): data preparation itself only receives the loaded
predictor, so `datamodules` never imports models.
"""

from __future__ import annotations

import argparse
import os
import sys

from datamodules.prepare import PrepareOptions, prepare_source
from datamodules.sources.registry import DataSource, all_sources
from datamodules.view_fill import DEFAULT_THRESHOLD


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
        "--view-threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="below this probability a predicted view stays unknown (0.8)",
    )
    parser.add_argument("--view-device", default="cpu", help="torch device of the view classifier (cpu)")


def _add_source(parser: argparse.ArgumentParser, source: DataSource) -> None:
    for option in source.options:
        parser.add_argument(option.flag, required=option.required, default=option.default, help=option.help)


def build_parser() -> argparse.ArgumentParser:
    """One sub-command per registered source: its own options first, then the common ones."""
    known = all_sources()
    parser = argparse.ArgumentParser(
        prog="lit-medxchat data prepare",
        description=f"Convert a dataset ({', '.join(known)}) into WebDataset shards (docs/data-preparation.md). "
        "Rerunning the same command after an interruption reuses finished shards.",
    )
    commands = parser.add_subparsers(dest="source", required=True)
    for name, source in known.items():
        command = commands.add_parser(name, help=source.help)
        _add_source(command, source)
        _add_common(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv`, prepare the shards, print the summary; 0 on success, 2 on unusable input."""
    args = build_parser().parse_args(argv)
    source = all_sources()[args.source]
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
        view_predictor = None
        if args.view_classifier is not None:
            # Loaded before the scan, so that a bad model path fails before any work.
            from lit_medxchat.inference.classify_views import ViewPredictor

            view_predictor = ViewPredictor(
                args.view_classifier, args.view_threshold, options.image_size, device=args.view_device
            )
        arguments = {option.keyword: getattr(args, option.keyword) for option in source.options}
        prepare_source(source, args.out, arguments, options, view_predictor)
    except (FileNotFoundError, ValueError) as error:
        print(f"lit-medxchat data prepare {args.source}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
