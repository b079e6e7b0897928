"""The demo's evidence table, figures and report, built from the stages' results."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lit_medxchat.demo.report import Evidence, Figure, evidence_text, write_report


def _get(scores: dict[str, Any], key: str) -> float:
    value = scores.get(key)
    return float("nan") if value is None else float(value)


def evidence_rows(results: dict[str, dict[str, Any]]) -> list[Evidence]:
    rows: list[Evidence] = []
    classifiers = results["evaluate_classifiers"]
    view = classifiers["view"]
    rows.append(
        Evidence(
            "view classifier",
            "accuracy",
            view["accuracy"],
            view["majority_accuracy"],
            f"majority class ({view['majority_class']})",
            goal=">= 0.98",
        )
    )
    findings = classifiers["findings"]
    rows.append(
        Evidence(
            "findings classifier",
            f"macro AUROC ({len(findings['labels_scored'])} findings present)",
            findings["macro_auroc"],
            0.5,
            "chance",
            goal=">= 0.85",
        )
    )

    report = results["evaluate_chat"]["report"]
    for metric, key in (
        ("clinical F1 micro (6 categories)", "ce_f1_micro"),
        ("clinical F1 macro (6 categories)", "ce_f1_macro"),
        ("BLEU-4", "bleu_4"),
        ("CIDEr", "cider"),
    ):
        value = _get(report["image"], key)
        rows.append(
            Evidence(
                "LLM-LoRA reports",
                metric,
                value,
                _get(report["most_frequent_report"], key),
                "most frequent training report",
            )
        )
        rows.append(
            Evidence(
                "LLM-LoRA reports", metric, value, _get(report["blank_images"], key), "same LLM trained on blank images"
            )
        )
    vqa = results["evaluate_chat"]["vqa"]
    for topic in ("", "/presence", "/location", "/sst"):
        key = f"vqa_acc{topic}"
        if key not in vqa["image"]:
            continue
        name = f"VQA accuracy{' (' + topic[1:] + ')' if topic else ' (all)'}"
        rows.append(
            Evidence(
                "LLM-LoRA VQA",
                name,
                _get(vqa["image"], key),
                _get(vqa["majority_answer"], key),
                "majority answer per question type",
            )
        )

    diffusion = results["evaluate_diffusion"]
    trained, untrained = diffusion["trained"], diffusion["untrained"]
    rows.append(
        Evidence(
            "CXR-SD",
            "judge detects the prompted finding",
            trained["detection_rate"],
            trained["no_finding_rate"],
            "same finding on 'no finding' prompts",
        )
    )
    rows.append(
        Evidence(
            "CXR-SD",
            "view agreement (frontal vs lateral)",
            trained["view_agreement"],
            untrained["view_agreement"],
            "untrained control branch",
        )
    )
    fid_key = trained["fid_key"] or "fid"
    rows.append(
        Evidence(
            "CXR-SD",
            fid_key.replace("_", " ").upper().replace("FID ", "FID (") + ")",
            _get(trained["scores"], fid_key),
            _get(untrained["scores"], fid_key),
            "untrained control branch",
            lower_is_better=True,
        )
    )
    return rows


def write_run_report(demo: Any, results: dict[str, dict[str, Any]], seconds: float) -> tuple[Path, Path, str]:
    from lit_medxchat.demo.plots import plot_training_curves

    rows = evidence_rows(results)
    curves = plot_training_curves(
        {
            name: Path(results[stage]["metrics_csv"])
            for name, stage in (
                ("view classifier", "view_classifier"),
                ("findings classifier", "findings_classifier"),
                ("SD base", "diffusion_base"),
                ("CXR-SD branch", "diffusion"),
                ("LLM base", "lm_base"), ("LLM-LoRA", "chat"),
                ("LLM-LoRA, blank images", "chat_blank"),
            )
            if results[stage].get("metrics_csv")
        },
        demo.figures / "training-curves.png",
    )
    figures = [
        Figure(
            "Built-in dataset",
            demo.figures / "synth-preview.png",
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
            Path(results["evaluate_diffusion"]["contact_sheet"]),
            "Top: real held-out CXRs with their reports; below: CXR-SD's drawings of the same reports "
            "with the trained and the untrained control branch.",
        )
    )
    data = results["prepare"]
    summary = [
        f"Built-in dataset: {results['synth']['studies']} studies, {results['synth']['images']} images "
        f"({results['synth']['anatomy']}); shards: " + ", ".join(f"{k} {v['samples']}" for k, v in data.items()) + ".",
        f"Wall time: {seconds / 60:.1f} min on this machine (finished stages are skipped when rerun).",
        "Every figure is computed on the held-out test split and stands beside its baseline.",
    ]
    failing = [r for r in rows if not r.beats_baseline]
    if failing:
        summary.append("Rows that do not beat their baseline: " + "; ".join(f"{r.model} {r.metric}" for r in failing))
    transcript = results["chat_examples"]["transcript"]
    md, html = write_report(
        demo.out,
        title="lit-medxchat demo: MedXChat on the built-in CXR dataset",
        summary=summary,
        evidence=rows,
        figures=figures,
        transcript=transcript,
        timings=demo.runner.timings,
    )
    _log_to_wandb(demo.out, rows)
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
