"""Held-out evaluation of the demo's models, each figure with its baseline computed on the same data.

Scores here are computed from whole-split predictions (never averaged per batch), and AUROC macro
averages only over labels that have both positives and negatives in the split: a label without
positives has no AUROC, and counting it as 0 or 0.5 would say something the data cannot.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from callbacks.scoring.text_to_cxr import xray_request_rate, xray_tags_in
from lit_medxchat.core.auroc import macro_auroc, per_label_auroc
from lit_medxchat.core.constants import CHEXPERT_LABELS, VIEW_CLASSES
from lit_medxchat.demo.results import (
    BranchEvaluation,
    ChatEvaluation,
    ClassifierEvaluation,
    DiffusionEvaluation,
    FindingsAUROC,
    ReportEvaluation,
    ReportExample,
    TextToCXREvaluation,
    TextToCXRExample,
    ViewAccuracy,
    VQAEvaluation,
    XrayRequestRate,
)
from lit_medxchat.evaluation.held_out import (
    ChatTestSplit,
    majority_vqa,
    run_chat_test,
    run_vqa_protocol,
    train_dialogue_answers,
)
from lit_medxchat.evaluation.image_tables import detection_rates, run_diffusion_test, view_group_agreement


@torch.no_grad()
def classifier_outputs(model: Any, datamodule: Any, split: str = "test") -> dict[str, np.ndarray]:
    """Run a classifier over a whole split: logits/probabilities with the batch's targets, in loader order."""
    datamodule.setup("test" if split == "test" else "validate")
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    model.eval()
    probs, views, labels, masks = [], [], [], []
    for batch in loader:
        logits = model.logits(batch["pixel_values"]).float()
        probs.append(logits.softmax(-1) if logits.shape[-1] == len(VIEW_CLASSES) else logits.sigmoid())
        views.append(batch["view"])
        labels.append(batch["labels"])
        masks.append(batch["label_mask"])
    return {
        "probs": torch.cat(probs).numpy(),
        "view": torch.cat(views).numpy(),
        "labels": torch.cat(labels).numpy(),
        "label_mask": torch.cat(masks).numpy(),
    }


def view_accuracy(outputs: dict[str, np.ndarray], train_views: list[int]) -> dict[str, float]:
    """Accuracy on the split vs always answering the training split's most frequent view."""
    predicted = outputs["probs"].argmax(-1)
    majority = Counter(train_views).most_common(1)[0][0]
    lateral = VIEW_CLASSES.index("LATERAL")
    return {
        "accuracy": float((predicted == outputs["view"]).mean()),
        "frontal_lateral_accuracy": float(((predicted == lateral) == (outputs["view"] == lateral)).mean()),
        "majority_accuracy": float((outputs["view"] == majority).mean()),
        "majority_frontal_lateral_accuracy": float(((outputs["view"] == lateral) == (majority == lateral)).mean()),
        "majority_class": VIEW_CLASSES[majority],
        "num_images": int(len(predicted)),
    }


def findings_auroc(outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-label AUROC over the labels the mask keeps; macro over labels with positives and negatives."""
    kept = outputs["label_mask"] > 0
    targets = np.where(kept, (outputs["labels"].round() == 1).astype(np.float64), -1.0)  # -1: not scored
    per_label = dict(zip(CHEXPERT_LABELS, per_label_auroc(targets, outputs["probs"]), strict=True))
    return {
        "macro_auroc": macro_auroc(targets, outputs["probs"]),
        "per_label": per_label,
        "labels_scored": [k for k, v in per_label.items() if not np.isnan(v)],
    }


def manifest_views(data_dir: Path, split: str) -> list[int]:
    """The view index of every sample of a split, read from the shards' metadata."""
    from datamodules.streaming import iter_samples

    return [VIEW_CLASSES.index(sample.json("json")["view"]) for sample in iter_samples(data_dir, split)]


def evaluate_classifiers(
    data_dir: Path, view_checkpoint: str | Path, findings_checkpoint: str | Path
) -> ClassifierEvaluation:
    """View accuracy vs the majority class, findings macro AUROC vs chance, on the test split of `data_dir`.

    The majority view is the training split's, read from the same shards.
    """
    from datamodules.classifier import ClassifierDataModule
    from lit_medxchat.models.image_classifier import load_classifier

    def test_data(model: Any, **labels: str) -> ClassifierDataModule:
        """The test split as `model` sees it: its input size and normalisation, no augmentation."""
        return ClassifierDataModule(str(data_dir), batch_size=64, num_workers=0, image_size=model.image_size,
                                    image_mean=model.image_mean, image_std=model.image_std, augment=False, **labels)

    view = load_classifier(view_checkpoint)
    view_scores = view_accuracy(classifier_outputs(view, test_data(view)), manifest_views(data_dir, "train"))
    findings = load_classifier(findings_checkpoint)
    # Uncertain (-1) labels are not scored, whatever the training policy was; blank (not mentioned) = absent.
    data = test_data(findings, uncertain_policy="ignore", blank_policy="zeros")
    findings_scores = findings_auroc(classifier_outputs(findings, data))
    return ClassifierEvaluation(view=ViewAccuracy(**view_scores), findings=FindingsAUROC(**findings_scores))


def evaluate_diffusion(
    data_dir: Path,
    diffusion_checkpoint: str | Path,
    findings_checkpoint: str | Path,
    view_checkpoint: str | Path,
    eval_batches: int,
    contact_sheet_path: Path,
) -> DiffusionEvaluation:
    """Trained control branch vs the untrained one (zero convs: exactly the frozen base) on test prompts.

    `eval_batches` test batches of 16 prompts are drawn per branch (all of them when 0); the two
    classifiers judge the generated images' findings and views; the real-vs-generated figure is
    written to `contact_sheet_path`.
    """
    from lit_medxchat.models.diffusion import CXRDiffusion

    trained = CXRDiffusion.load_from_checkpoint(diffusion_checkpoint, map_location="cpu")
    untrained = CXRDiffusion(**dict(trained.hparams))
    limit = 1.0 if eval_batches == 0 else eval_batches
    branches: dict[str, BranchEvaluation] = {}
    for name, model in (("trained", trained), ("untrained", untrained)):
        scores, items = run_diffusion_test(model, data_dir, findings_checkpoint, view_checkpoint, limit)
        branches[name] = BranchEvaluation(
            scores=_floats(scores),
            fid_key=next((k for k in scores if k.startswith("fid_")), None),
            view_agreement=view_group_agreement(items),
            **detection_rates(items),
        )
    sheet = _contact_sheet(data_dir, trained, untrained, contact_sheet_path)
    return DiffusionEvaluation(trained=branches["trained"], untrained=branches["untrained"], contact_sheet=str(sheet))


def _contact_sheet(data_dir: Path, trained: Any, untrained: Any, out_path: Path) -> Path:
    """Real test CXRs beside CXR-SD's drawings of their reports (trained and untrained branch)."""
    from datamodules.diffusion import DiffusionDataModule
    from lit_medxchat.demo.plots import contact_sheet

    data = DiffusionDataModule(
        str(data_dir), batch_size=6, num_workers=0, seed=0, resolution=trained.hparams.image_size
    )
    data.setup("test")
    batch = next(iter(data.test_dataloader()))
    prompts = list(batch["text"])
    real = (batch["pixel_values"][:, 0].numpy() + 1.0) / 2.0
    rows = [("real", list(real), prompts)]
    for label, model in (("trained branch", trained), ("untrained branch", untrained)):
        images = model.generate(
            prompts,
            num_inference_steps=model.sampling_options.num_inference_steps,
            guidance_scale=model.sampling_options.guidance_scale,
            seed=0,
        )
        rows.append((label, list(images[:, 0].numpy()), ["" for _ in prompts]))
    return contact_sheet(rows, out_path)


def evaluate_chat(
    data_dir: Path,
    tokenizer_path: str | Path,
    image_checkpoint: str | Path,
    blank_checkpoint: str | Path,
    eval_limit: int,
    vqa_per_category: int,
) -> ChatEvaluation:
    """Reports and VQA of the image-conditioned LLM vs the blank-image LLM and the majority baselines.

    Both LLMs are tested on the test split of `data_dir` (at most `eval_limit` samples per task, all
    when 0; VQA also on the balanced protocol with `vqa_per_category` images per category and answer); the
    majority baselines come from the training split's dialogues.
    """
    from callbacks.scoring.clinical import clinical_efficacy, default_labeler
    from callbacks.scoring.nlg import report_nlg_scores
    from lit_medxchat.evaluation.vqa_protocol import protocol_counts, protocol_for_split, protocol_scores

    split = ChatTestSplit(data_dir, tokenizer_path, eval_limit)
    report_image = run_chat_test(image_checkpoint, split, "report", blank_images=False)
    report_blank = run_chat_test(blank_checkpoint, split, "report", blank_images=True)
    reports, answers = train_dialogue_answers(data_dir)
    frequent = reports.most_common(1)[0][0]
    references = [item["reference"] for item in report_image.last_items]
    labeler = default_labeler()
    frequent_scores = dict(report_nlg_scores([frequent] * len(references), references, meteor=False))
    frequent_scores.update(clinical_efficacy([labeler(frequent)] * len(references), [labeler(r) for r in references]))
    vqa_image = run_chat_test(image_checkpoint, split, "vqa", blank_images=False)
    vqa_blank = run_chat_test(blank_checkpoint, split, "vqa", blank_images=True)
    protocol = protocol_for_split(data_dir, "test", vqa_per_category)
    protocol_image, _ = run_vqa_protocol(image_checkpoint, split, protocol, blank_images=False)
    protocol_blank, _ = run_vqa_protocol(blank_checkpoint, split, protocol, blank_images=True)
    answered = [item["prediction"] for item in vqa_image.last_items + protocol_image]
    vqa = VQAEvaluation(
        image=_floats(vqa_image.last_scores),
        blank_images=_floats(vqa_blank.last_scores),
        majority_answer=_floats(majority_vqa(vqa_image.last_items, answers)),
        answers_with_xray_tags=xray_tags_in(answered),
        answers=len(answered),
        protocol_image=_floats(protocol_scores(protocol_image)),
        protocol_blank_images=_floats(protocol_scores(protocol_blank)),
        protocol_majority_answer=_floats(majority_vqa(protocol_image, answers)),
        protocol_items=protocol_counts(protocol),
    )
    t2i_image = run_chat_test(image_checkpoint, split, "t2i", blank_images=False)
    t2i_blank = run_chat_test(blank_checkpoint, split, "t2i", blank_images=True)
    t2i = TextToCXREvaluation(
        image=_request_rate(t2i_image.last_items, labeler),
        blank_images=_request_rate(t2i_blank.last_items, labeler),
        examples=[TextToCXRExample(i["prediction"], i["reference"]) for i in t2i_image.last_items[:3]],
    )
    report_blank_input = run_chat_test(image_checkpoint, split, "report", blank_images=True, generate=False)
    report = ReportEvaluation(
        image=_floats(report_image.last_scores),
        blank_images=_floats(report_blank.last_scores),
        most_frequent_report=_floats(frequent_scores),
        most_frequent_report_text=frequent,
        examples=[ReportExample(i["reference"], i["prediction"]) for i in report_image.last_items[:3]],
        image_model_loss_blank_input=report_blank_input.last_scores.get("test_loss"),
    )
    return ChatEvaluation(report=report, vqa=vqa, t2i=t2i)


def _request_rate(items: list[dict], labeler: Any) -> XrayRequestRate:
    rates = xray_request_rate(items, labeler)
    return XrayRequestRate(rates["request_rate"], rates["view_rate"], rates["finding_rate"], int(rates["n"]))


def _floats(scores: dict[str, Any]) -> dict[str, float | None]:
    return {k: (None if v is None else float(v)) for k, v in scores.items()}
