"""The demo's evidence table, figures and report, built from the stages' records."""

from __future__ import annotations

import math
from pathlib import Path

from lit_medxchat.demo.folders import DemoFolders
from lit_medxchat.demo.report import Evidence, Figure, evidence_text, write_evidence_json, write_report
from lit_medxchat.demo.results import (
    ChatEvaluation,
    ClassifierEvaluation,
    DemoResults,
    DiffusionEvaluation,
    ReportEvaluation,
    Scores,
    TextToCXREvaluation,
    VQAEvaluation,
)


def _get(scores: Scores, key: str) -> float:
    value = scores.get(key)
    return float("nan") if value is None else float(value)


# The findings every built-in study can carry that the findings classifier must see (per-label goal).
JUDGED_FINDINGS: tuple[str, ...] = (
    "Pleural Effusion", "Cardiomegaly", "Pneumothorax", "Lung Lesion", "Consolidation", "Support Devices",
)
BLANK_LLM = "same LLM trained on blank images"
FREQUENT = "most frequent training report"


def _classifier_rows(classifiers: ClassifierEvaluation) -> list[Evidence]:
    view, findings = classifiers.view, classifiers.findings
    majority = f"majority class ({view.majority_class})"
    rows = [
        Evidence("view classifier", "frontal vs lateral accuracy", view.frontal_lateral_accuracy,
                 view.majority_frontal_lateral_accuracy, majority, threshold=0.99),
        Evidence("view classifier", "PA / AP / lateral accuracy", view.accuracy, view.majority_accuracy,
                 majority, threshold=0.95),
        Evidence("findings classifier", f"macro AUROC ({len(findings.labels_scored)} findings present)",
                 findings.macro_auroc, 0.5, "chance", threshold=0.85),
    ]
    for name in JUDGED_FINDINGS:
        value = findings.per_label.get(name, float("nan"))
        rows.append(
            Evidence("findings classifier", f"AUROC {name.lower()}", _nan(value), 0.5, "chance", threshold=0.75)
        )
    return rows


def _report_rows(report: ReportEvaluation) -> list[Evidence]:
    rows = []
    for metric, key, margins in (
        ("clinical F1 micro (6 categories)", "ce_f1_micro", {FREQUENT: 0.10, BLANK_LLM: 0.15}),
        ("clinical F1 macro (6 categories)", "ce_f1_macro", {}),
        ("BLEU-4", "bleu_4", {}),
        ("CIDEr", "cider", {}),
    ):
        value = _get(report.image, key)
        for name, scores in ((FREQUENT, report.most_frequent_report), (BLANK_LLM, report.blank_images)):
            margin = margins.get(name, 0.0)
            rows.append(Evidence("LLM-LoRA reports", metric, value, _get(scores, key), name, margin=margin))
    rows.append(
        Evidence(
            "LLM-LoRA reports", "teacher-forced loss of the reference reports", _get(report.image, "test_loss"),
            _nan(report.image_model_loss_blank_input), "same model, blank image input", lower_is_better=True,
        )
    )
    return rows


def _vqa_rows(vqa: VQAEvaluation) -> list[Evidence]:
    rows = _vqa_protocol_rows(vqa)
    for topic in ("", "/presence", "/location", "/sst"):
        key = f"vqa_acc{topic}"
        if key not in vqa.image:
            continue
        name = f"VQA accuracy{' (' + topic[1:] + ')' if topic else ' (all)'}, random draw (n={_n(vqa.image, key)})"
        rows.append(Evidence("LLM-LoRA VQA", name, _get(vqa.image, key), _get(vqa.majority_answer, key),
                             "majority answer per question type"))
    if vqa.answers_with_xray_tags is not None:
        rows.append(Evidence("LLM-LoRA VQA", f"answers with <Xray> tags (of {vqa.answers})",
                             float(vqa.answers_with_xray_tags), float("nan"), "none allowed",
                             threshold=0.0, lower_is_better=True, needs_baseline=False))
    return rows


def _n(scores: Scores, accuracy_key: str) -> int:
    """The item count beside an accuracy (`vqa_acc/x` -> `vqa_n/x`, `presence_vqa_acc/x` -> `presence_vqa_n/x`);
    0 when the scores hold none."""
    count = _get(scores, accuracy_key.replace("vqa_acc", "vqa_n", 1))
    return 0 if math.isnan(count) else int(count)


# Presence per category with its own goal (the findings the demo's images show best); the rest share the topic's.
PRESENCE_GOALS: dict[str, float] = {"pleural_effusion": 0.80, "edema": 0.80}


def _vqa_protocol_rows(vqa: VQAEvaluation) -> list[Evidence]:
    """The balanced protocol's rows: presence (chance 0.5) against the blank-image LLM, per-category presence,
    location and size/severity/type against the majority answer and the blank-image LLM, readable yes/no."""
    image, blank, majority = vqa.protocol_image, vqa.protocol_blank_images, vqa.protocol_majority_answer
    if image is None or blank is None or majority is None:
        return []
    key = "vqa_acc/presence"
    name = f"VQA presence, balanced (n={_n(image, key)})"
    rows = [Evidence("LLM-LoRA VQA", name, _get(image, key), _get(blank, key), BLANK_LLM, margin=0.15,
                     threshold=0.70)]
    for category, threshold in PRESENCE_GOALS.items():
        key = f"presence_vqa_acc/diagnosis/{category}"
        rows.append(Evidence("LLM-LoRA VQA", f"VQA presence, balanced: {category.replace('_', ' ')} "
                             f"(n={_n(image, key)})", _get(image, key), _get(blank, key), BLANK_LLM,
                             threshold=threshold))
    for topic in ("location", "sst"):
        key = f"vqa_acc/{topic}"
        name = f"VQA {topic}, protocol (n={_n(image, key)})"
        rows.append(Evidence("LLM-LoRA VQA", name, _get(image, key), _get(majority, key),
                             "majority answer per question type"))
        rows.append(Evidence("LLM-LoRA VQA", name, _get(image, key), _get(blank, key), BLANK_LLM))
    rows.append(Evidence("LLM-LoRA VQA", "presence answers open with a readable yes or no",
                         _get(image, "presence_yes_no_rate"), _get(blank, "presence_yes_no_rate"), BLANK_LLM,
                         threshold=0.95, needs_baseline=False))
    return rows


def _t2i_rows(t2i: TextToCXREvaluation | None) -> list[Evidence]:
    if t2i is None:
        return []
    return [
        Evidence("LLM-LoRA text-to-CXR", f"<Xray> prompt names the requested view and finding ({t2i.image.n})",
                 _nan(t2i.image.request_rate), _nan(t2i.blank_images.request_rate), BLANK_LLM,
                 threshold=0.90, needs_baseline=False),
    ]


def _diffusion_rows(diffusion: DiffusionEvaluation) -> list[Evidence]:
    trained, untrained = diffusion.trained, diffusion.untrained
    fid_key = trained.fid_key or "fid"
    return [
        Evidence("CXR-SD", "judge detects the prompted finding", trained.detection_rate,
                 trained.no_finding_rate, "same finding on 'no finding' prompts", margin=0.20),
        Evidence("CXR-SD", "view agreement (frontal vs lateral)", trained.view_agreement,
                 untrained.view_agreement, "untrained control branch", threshold=0.90),
        Evidence("CXR-SD", fid_key.replace("_", " ").upper().replace("FID ", "FID (") + ")",
                 _get(trained.scores, fid_key), _get(untrained.scores, fid_key), "untrained control branch",
                 lower_is_better=True),
    ]


def evidence_rows(
    classifiers: ClassifierEvaluation, chat: ChatEvaluation, diffusion: DiffusionEvaluation
) -> list[Evidence]:
    """Every figure of the run beside its baseline, with the goal it must meet."""
    return [
        *_classifier_rows(classifiers),
        *_report_rows(chat.report),
        *_vqa_rows(chat.vqa),
        *_t2i_rows(chat.t2i),
        *_diffusion_rows(diffusion),
    ]


def _serve_command(folders: DemoFolders) -> str:
    from lit_medxchat.serve.run_info import serve_command

    runs = folders.runs
    return serve_command(runs / "chat", runs / "diffusion", runs / "view-classifier")


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _figures(folders: DemoFolders, results: DemoResults) -> list[Figure]:
    """The report's figures: the dataset preview, the training curves (when any run logged) and the contact sheet."""
    from lit_medxchat.demo.plots import plot_training_curves

    curves = plot_training_curves(
        {name: Path(run.metrics_csv) for name, run in results.training_runs().items() if run.metrics_csv},
        folders.figures / "training-curves.png",
    )
    figures = [
        Figure(
            "Built-in dataset",
            folders.figures / "synth-preview.png",
            "CXRs rendered from the chest CT with inserted findings (view and findings under each image).",
        )
    ]
    if curves is not None:
        figures.append(
            Figure(
                "Training curves",
                curves,
                "Training loss per step (faint), its running mean, and "
                "validation loss (dots) for every model the demo trains.",
            )
        )
    figures.append(
        Figure(
            "Real vs generated",
            Path(results.evaluate_diffusion.contact_sheet),
            "Top: real held-out CXRs with their reports; below: CXR-SD's drawings of the same reports "
            "with the trained and the untrained control branch.",
        )
    )
    return figures


def write_run_report(
    folders: DemoFolders, results: DemoResults, timings: dict[str, float], seconds: float
) -> tuple[Path, Path, str]:
    """Write `report.md`, `report.html` and `evidence.json` under `folders.out`.

    Returns both reports' paths and the evidence as a plain-text table for the terminal; `timings` are
    seconds per stage name, `seconds` the run's wall time.
    """
    rows = evidence_rows(results.evaluate_classifiers, results.evaluate_chat, results.evaluate_diffusion)
    figures = _figures(folders, results)
    synth, shards = results.synth, results.prepare.splits()
    summary = [
        f"Built-in dataset: {synth.studies} studies, {synth.images} images "
        f"({synth.anatomy}); shards: " + ", ".join(f"{k} {v.samples}" for k, v in shards.items()) + ".",
        f"Wall time: {seconds / 60:.1f} min on this machine (finished stages are skipped when rerun).",
        "Every figure is computed on the held-out test split and stands beside its baseline.",
        "Chat with these models in a browser (needs `pip install lit-medxchat[serve]`): "
        + _serve_command(folders),
    ]
    failing = [r for r in rows if not r.meets_goal]
    if failing:
        summary.append("Rows that miss their goal: " + "; ".join(f"{r.model} {r.metric}" for r in failing))
    write_evidence_json(rows, folders.out / "evidence.json", {"wall_seconds": round(seconds, 1)})
    md, html = write_report(
        folders.out,
        title="lit-medxchat demo: MedXChat on the built-in CXR dataset",
        summary=summary,
        evidence=rows,
        figures=figures,
        transcript=results.chat_examples.transcript,
        timings=timings,
    )
    _log_to_wandb(folders.out, rows)
    return md, html, evidence_text(rows)


def _log_to_wandb(out: Path, rows: list[Evidence]) -> None:
    """An offline W&B run with the evidence, when wandb is installed (`wandb sync` uploads it later)."""
    try:
        import wandb
    except ImportError:
        return
    run = wandb.init(project="lit-medxchat-demo", dir=str(out), mode="offline", reinit="finish_previous")
    table = wandb.Table(columns=["model", "metric", "ours", "baseline", "baseline is", "beats baseline"])
    for r in rows:
        table.add_data(r.model, r.metric, r.value, r.baseline, r.baseline_name, r.beats_baseline)
        if not math.isnan(r.value):
            run.summary[f"{r.model}/{r.metric}"] = r.value
    run.log({"evidence": table})
    run.finish()
