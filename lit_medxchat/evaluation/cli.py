"""`lit-medxchat evaluate --run-dir RUN`: the paper's chat tables for a trained chat run, on a held-out split.

Every held-out image is asked for its report (Tables 1 and 2), the VQA protocol's questions (Tables 3 and 4:
`--vqa-per-category` images per diagnostic category with the finding and as many without, and the location and
size/severity/type follow-ups; `evaluation.vqa_protocol`), one VQA question drawn at random per image (the
rows marked "random draw"), and every text-to-CXR request of the split is answered (the `<Xray>` request rule),
with the run's last complete checkpoint; the figures come from the same callbacks and scorers as validation.
Baselines: the training split's most frequent report, the majority answer per question type and, with
`--blank-run`, a run trained and tested on blank images. Writes `tables.md`, a CSV per table, `tables.json` and
the generated reports as CSVs (`reports.csv`, `rexrank/`), and prints the tables.

Usage: lit-medxchat evaluate --run-dir RUN [--blank-run RUN] [--data-dir SHARDS] [--split test] [--out DIR]
                             [--limit N] [--vqa-per-category N] [--uncertain-as 0|1] [--no-meteor]
                             [--no-progress]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lit_medxchat.evaluation.chat_tables import (
    Table,
    clinical_table,
    most_frequent,
    nlg_table,
    request_table,
    study_rows,
    vqa_tables,
)


class EvaluationInputError(ValueError):
    """A run folder or data location that cannot be evaluated; the message says what is missing and where."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lit-medxchat evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="the chat run folder (`fit`'s default_root_dir)")
    parser.add_argument("--blank-run", type=Path, help="a chat run trained on blank images: the image-free baseline")
    parser.add_argument("--diffusion-run", type=Path, help="a CXR-SD run: Table 5 (needs --findings-run, --view-run)")
    parser.add_argument("--findings-run", type=Path, help="the findings classifier run that judges generated CXRs")
    parser.add_argument("--view-run", type=Path, help="the view classifier run that judges generated CXRs")
    parser.add_argument("--data-dir", help="shards to test on (default: the run's own, from its saved config)")
    parser.add_argument("--split", choices=("test", "validate"), default="test")
    parser.add_argument("--out", type=Path, help="output folder (default: RUN/evaluation)")
    parser.add_argument("--limit", type=int, default=0, help="samples per task for a quick look (0: all)")
    parser.add_argument("--vqa-per-category", type=int, default=50,
                        help="VQA protocol: images per diagnostic category and presence answer, and per follow-up "
                             "topic (8 is the paper's 48-image design; default 50)")
    parser.add_argument("--uncertain-as", type=float, choices=(0.0, 1.0), default=0.0,
                        help="uncertain (-1) labels count as this in clinical efficacy (default 0: negative)")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (it needs Java)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def checkpoint_of(run_dir: Path, needs_tokenizer: bool = True) -> Path:
    """The run's newest complete single-file checkpoint; errors say what the folder lacks."""
    from lit_medxchat.training.completion import newest_checkpoint

    if not run_dir.is_dir():
        raise EvaluationInputError(f"--run-dir {run_dir} is not a folder")
    try:
        checkpoint = newest_checkpoint(run_dir)
    except FileNotFoundError as error:
        raise EvaluationInputError(str(error)) from error
    if checkpoint.is_dir():
        raise EvaluationInputError(
            f"{checkpoint} is a DeepSpeed checkpoint folder: convert it to one file first "
            f"(`python -m lit_medxchat.training.checkpointing to-fp32 {checkpoint} {run_dir}/checkpoints/fp32.ckpt`)"
        )
    if needs_tokenizer and not (run_dir / "tokenizer").is_dir():
        raise EvaluationInputError(f"{run_dir}/tokenizer is missing: `fit` writes it at the start of training")
    return checkpoint


def data_dir_of(run_dir: Path, given: str | None, split: str) -> str:
    """`given`, else the shards the run trained on; the split must exist there."""
    from datamodules.manifest import load_manifest
    from lit_medxchat.evaluation.held_out import saved_data_args

    data_dir = given or saved_data_args(run_dir, ("data_dir",)).get("data_dir")
    if not data_dir:
        raise EvaluationInputError(f"{run_dir}'s saved config names no data.init_args.data_dir: pass --data-dir")
    try:
        load_manifest(data_dir, split)
    except FileNotFoundError as error:
        raise EvaluationInputError(f"split {split!r} is missing from {data_dir}: {error}") from error
    return str(data_dir)


def evaluate_chat_run(options: argparse.Namespace) -> tuple[list[Table], list[dict[str, str]]]:
    """Run the model(s) over the split; the tables, and one generated report per study (for external scorers)."""
    from callbacks.scoring.clinical import default_labeler
    from callbacks.scoring.text_to_cxr import xray_request_rate, xray_tags_in
    from lit_medxchat.core.quiet import loggers_at_level
    from lit_medxchat.evaluation.held_out import (
        ChatTestSplit,
        majority_vqa,
        run_chat_test,
        run_vqa_protocol,
        train_dialogue_answers,
    )
    from lit_medxchat.evaluation.vqa_protocol import protocol_counts, protocol_for_split, protocol_scores

    runs = {"image LLM": (checkpoint_of(options.run_dir), False)}
    if options.blank_run is not None:
        runs["blank-image LLM"] = (checkpoint_of(options.blank_run), True)
    data_dir = data_dir_of(options.run_dir, options.data_dir, options.split)
    split = ChatTestSplit(Path(data_dir), options.run_dir / "tokenizer", options.limit, options.split)
    progress = not options.no_progress
    protocol = protocol_for_split(data_dir, options.split, options.vqa_per_category)
    answers, protocol_answers = {}, {}
    for model, (checkpoint, blank) in runs.items():
        answers[model] = {}
        for task in ("report", "vqa", "t2i"):
            print(f"{model}: {task} on the {options.split} split ({checkpoint})", file=sys.stderr)
            # The loader's line per skipped sample off: most samples have no dialogue of a given task (a
            # text-to-CXR request, say), which is expected here; the counts by reason are printed below.
            with loggers_at_level(logging.ERROR, "datamodules.streaming"):
                found = run_chat_test(checkpoint, split, task, blank_images=blank, progress=progress,
                                      meteor=not options.no_meteor)
            answers[model][task] = found
            skipped = {reason: count for reason, count in found.skipped.items() if count}
            print(f"  {len(found.last_items)} answered" + (f"; skipped: {skipped}" if skipped else ""),
                  file=sys.stderr)
        print(f"{model}: the VQA protocol's {len(protocol)} questions", file=sys.stderr)
        protocol_answers[model], protocol_skipped = run_vqa_protocol(checkpoint, split, protocol, blank, progress)
        if protocol_skipped:
            print(f"  skipped: {dict(protocol_skipped)}", file=sys.stderr)
    main = answers["image LLM"]
    reports, vqa_answers = train_dialogue_answers(Path(data_dir))
    references = [item["reference"] for item in main["report"].last_items]
    frequent = most_frequent(reports)
    report_rows = {model: [item["prediction"] for item in found["report"].last_items]
                   for model, found in answers.items()}
    _check_same_references(answers, references)
    report_rows["most frequent training report"] = [frequent] * len(references)
    labeler = default_labeler()
    meteor = not options.no_meteor
    vqa_rows = {model: protocol_scores(answered) for model, answered in protocol_answers.items()}
    vqa_rows["majority answer"] = majority_vqa(protocol_answers["image LLM"], vqa_answers)
    for model, found in answers.items():
        vqa_rows[f"{model}, random draw"] = dict(found["vqa"].last_scores)
    vqa_rows["majority answer, random draw"] = majority_vqa(main["vqa"].last_items, vqa_answers)
    request_rows = {model: xray_request_rate(found["t2i"].last_items, labeler) for model, found in answers.items()}
    stray = {model: xray_tags_in([item["prediction"] for task in ("report", "vqa") for item in found[task].last_items]
                                 + [item["prediction"] for item in protocol_answers[model]])
             for model, found in answers.items()}
    tables = [
        clinical_table(report_rows, references, labeler, int(options.uncertain_as),
                       "lit_medxchat.labeler.label_report"),
        nlg_table(report_rows, references, meteor),
        *vqa_tables(vqa_rows, protocol_counts(protocol), options.vqa_per_category, len(main["vqa"].last_items)),
        request_table(request_rows, stray),
    ]
    return tables, study_rows(main["report"].last_items)


def evaluate_diffusion_run(options: argparse.Namespace) -> Table:
    """Table 5 for `--diffusion-run`, judged by the classifiers of `--findings-run` and `--view-run`."""
    from lit_medxchat.evaluation.held_out import batches_for
    from lit_medxchat.evaluation.image_tables import generated_images_table

    checkpoint = checkpoint_of(options.diffusion_run, needs_tokenizer=False)
    data_dir = data_dir_of(options.diffusion_run, options.data_dir, options.split)
    print(f"CXR-SD: generating for the {options.split} prompts ({checkpoint})", file=sys.stderr)
    return generated_images_table(checkpoint, checkpoint_of(options.findings_run, needs_tokenizer=False),
                                  checkpoint_of(options.view_run, needs_tokenizer=False), Path(data_dir),
                                  batches_for(options.limit), progress=not options.no_progress)


def _check_same_references(answers: dict, references: list[str]) -> None:
    """The baseline run must have answered the same samples, in the same order, or its row is not comparable."""
    for model, found in answers.items():
        theirs = [item["reference"] for item in found["report"].last_items]
        if theirs != references:
            raise EvaluationInputError(f"{model} answered other reports than the image LLM ({len(theirs)} vs "
                                       f"{len(references)}): were both runs trained on the same shards?")


def main(argv: list[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    from lit_medxchat.evaluation.writers import table_markdown, write_report_csvs, write_tables

    try:
        if options.diffusion_run is not None and (options.findings_run is None or options.view_run is None):
            raise EvaluationInputError("--diffusion-run needs --findings-run and --view-run (the judges of Table 5)")
        tables, reports = evaluate_chat_run(options)
        if options.diffusion_run is not None:
            tables.append(evaluate_diffusion_run(options))
    except (EvaluationInputError, FileNotFoundError) as error:
        print(f"lit-medxchat evaluate: {error}", file=sys.stderr)
        return 2
    out = options.out or options.run_dir / "evaluation"
    written = write_tables(tables, out) + write_report_csvs(reports, out)
    print("\n".join(table_markdown(table) for table in tables))
    print(f"tables: {', '.join(str(path) for path in written)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
