"""Table 5's figures for a CXR-SD run: generate for the held-out prompts and judge the images with the findings
and view classifiers (`callbacks.image_metrics.ImageMetrics`), plus the two rates the demo's evidence reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lit_medxchat.core.constants import CHEXPERT_LABELS, VIEW_CLASSES
from lit_medxchat.core.quiet import quiet_transformers
from lit_medxchat.evaluation.chat_tables import Table
from lit_medxchat.evaluation.held_out import EVAL_BATCH_SIZE, held_out_test


def detection_rates(items: list[dict]) -> dict[str, float]:
    """How often the judge finds the prompted finding, vs how often it fires on no-finding prompts.

    For every (image, finding) pair whose prompt states the finding, the judge "detects" it when its
    probability is >= 0.5. The baseline is the same label's detection rate on images generated from
    "No Finding" prompts, averaged over the same pairs, so both rates weigh the findings alike.
    """
    probs = torch.cat([it["gen_probs"] for it in items]).numpy()
    labels = torch.cat([it["labels"] for it in items]).numpy()
    no_finding = CHEXPERT_LABELS.index("No Finding")
    normal = labels[:, no_finding] == 1
    fired = probs >= 0.5
    rates, baselines = [], []
    for j in range(len(CHEXPERT_LABELS)):
        if j == no_finding:
            continue
        positive = labels[:, j] == 1
        if not positive.any() or not normal.any():
            continue
        rates.extend(fired[positive, j].tolist())
        baselines.extend([float(fired[normal, j].mean())] * int(positive.sum()))
    if not rates:
        return {"detection_rate": float("nan"), "no_finding_rate": float("nan"), "pairs": 0}
    return {"detection_rate": float(np.mean(rates)), "no_finding_rate": float(np.mean(baselines)), "pairs": len(rates)}


def view_group_agreement(items: list[dict]) -> float:
    """Frontal (PA/AP) vs lateral agreement between the requested and the judged view."""
    probs = torch.cat([it["view_probs"] for it in items]).numpy()
    requested = torch.cat([it["view"] for it in items]).numpy()
    lateral = VIEW_CLASSES.index("LATERAL")
    keep = requested != VIEW_CLASSES.index("OTHER")
    return float(((probs.argmax(-1) == lateral) == (requested == lateral))[keep].mean())


def run_diffusion_test(
    model: Any,
    data_dir: Path,
    findings_checkpoint: str | Path,
    view_checkpoint: str | Path,
    limit_batches: int | float,
    progress: bool = False,
) -> tuple[dict[str, Any], list[dict]]:
    """Generate for the test prompts of `data_dir`, judged by the two classifier checkpoints."""

    from callbacks.image_metrics import ImageMetrics
    from datamodules.diffusion import DiffusionDataModule

    model.sampling_options.val_generate_batches = 10**9  # generate for every test batch
    metrics = ImageMetrics(
        findings_classifier=str(findings_checkpoint),
        view_classifier=str(view_checkpoint),
    )
    data = DiffusionDataModule(
        str(data_dir), batch_size=EVAL_BATCH_SIZE, num_workers=0, seed=0, resolution=model.hparams.image_size
    )
    # seeded noise and timesteps: the same for both branches
    loss = held_out_test(model, data, metrics, limit_batches, progress=progress)
    return {**metrics.last_scores, "test_loss": loss}, list(metrics.last_items)


def generated_images_table(
    diffusion_checkpoint: str | Path,
    findings_checkpoint: str | Path,
    view_checkpoint: str | Path,
    data_dir: Path,
    limit_batches: int | float,
    progress: bool = False,
) -> Table:
    """Table 5: FID and the findings classifier's accuracy on generated CXRs (beside the same classifier on the
    real test images), view accuracy and frontal/lateral agreement, for the trained control branch and for the
    untrained one (zero convs: exactly the frozen base, the baseline)."""
    from lit_medxchat.models.diffusion import CXRDiffusion

    with quiet_transformers():
        trained = CXRDiffusion.load_from_checkpoint(diffusion_checkpoint, map_location="cpu")
        untrained = CXRDiffusion(**dict(trained.hparams))
    rows, scores, fid_key = [], {}, None
    for name, model in (("CXR-SD (trained control branch)", trained), ("frozen base (untrained branch)", untrained)):
        scores, items = run_diffusion_test(model, data_dir, findings_checkpoint, view_checkpoint, limit_batches,
                                           progress)
        fid_key = next((key for key in scores if key.startswith("fid_")), None)
        rows.append({"model": name, "fid": scores.get(fid_key) if fid_key else None,
                     "findings_accuracy": scores.get("t2i_findings_acc"),
                     "findings_auroc_macro": scores.get("t2i_findings_auroc_macro"),
                     "view_accuracy": scores.get("t2i_view_acc"),
                     "frontal_lateral_agreement": view_group_agreement(items) if items else None,
                     **(detection_rates(items) if items else {}), "n": scores.get("t2i_n")})
    rows.append({"model": "real test images (classifier ceiling)",
                 "findings_accuracy": scores.get("t2i_findings_acc_real"),
                 "findings_auroc_macro": scores.get("t2i_findings_auroc_macro_real")})
    return Table("table5_generated_images", "Table 5: generated CXRs judged by classifiers trained on real images",
                 rows, {"n": rows[0]["n"], "fid_features": fid_key or "n/a",
                        "findings classifier": str(findings_checkpoint), "view classifier": str(view_checkpoint),
                        "detection_rate": "the prompted finding detected (p >= 0.5); no_finding_rate: the same "
                                          "labels on images drawn from 'No Finding' prompts"})
