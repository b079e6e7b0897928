"""Training the view classifier (ViT over `VIEW_CLASSES`) and the findings classifier (ResNet, 14 CheXpert labels).

`ViewClassifier` and `FindingsClassifier` are thin LightningModules holding an `ImageClassifierCore`
(`lit_medxchat.models.image_classifier`, free of Lightning): steps, losses, metrics and optimiser
live here; the backbone, its preprocessing and the judge/FID API (`preprocess`, `features`,
`predict_proba` on images in [0, 1] at any size) live in the core, and are delegated to so a
training module can judge images too. `load_classifier` returns the core.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_medxchat.core.constants import CHEXPERT_LABELS, VIEW_CLASSES
from lit_medxchat.models.checkpoint_io import TrainableOnlyCheckpoint
from lit_medxchat.models.eval_loss import eval_loss_metrics, log_eval_loss
from lit_medxchat.models.image_classifier import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    UNCERTAIN_POLICIES,
    ImageClassifierCore,
    build_findings_backbone,
    build_findings_classifier,
    build_view_backbone,
    build_view_classifier,
    load_classifier,
)

__all__ = [
    "FindingsClassifier",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LR_DECAYS",
    "UNCERTAIN_POLICIES",
    "ViewClassifier",
    "build_findings_backbone",
    "build_view_backbone",
    "load_classifier",
    "tiny_findings_kwargs",
    "tiny_view_kwargs",
]

LR_DECAYS = ("none", "cosine")


class _ImageClassifier(TrainableOnlyCheckpoint, L.LightningModule):
    """Shared optimiser, steps and delegation to the core of the two classifiers (every weight trains)."""

    core: ImageClassifierCore

    # ---- the core's inference API, for callers holding the training module ------------------------
    @property
    def model(self) -> nn.Module:
        """The transformers backbone."""
        return self.core.model

    @property
    def image_size(self) -> int:
        return self.core.image_size

    @property
    def image_mean(self) -> tuple[float, ...]:
        return self.core.image_mean

    @property
    def image_std(self) -> tuple[float, ...]:
        return self.core.image_std

    @property
    def num_features(self) -> int:
        return self.core.num_features

    def preprocess(self, images01: Tensor) -> Tensor:
        return self.core.preprocess(images01)

    def logits(self, pixel_values: Tensor) -> Tensor:
        return self.core.logits(pixel_values)

    def features(self, images01: Tensor) -> Tensor:
        return self.core.features(images01)

    def predict_proba(self, images01: Tensor) -> Tensor:
        return self.core.predict_proba(images01)

    def export_pretrained(self, out_dir: str | Path) -> list[Path]:
        return self.core.export_pretrained(out_dir)

    # ---- training -------------------------------------------------------------------------------
    def configure_optimizers(self):
        from lit_medxchat.core.schedules import linear_warmup, warmup_cosine

        optimizer = torch.optim.AdamW(
            [p for p in self.parameters() if p.requires_grad],
            lr=self.hparams.learning_rate,
            weight_decay=self.hparams.weight_decay,
        )
        warmup = self.hparams.warmup_steps
        if self.hparams.get("lr_decay", "none") == "cosine":
            schedule = warmup_cosine(warmup, int(self.trainer.estimated_stepping_batches))
        else:
            schedule = linear_warmup(warmup)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    def load_state_dict(self, state_dict: Mapping[str, Tensor], strict: bool = True, assign: bool = False):
        # Checkpoints written before the module held a core keep the backbone at `model.`; resume them too.
        state_dict = {("core." + key if key.startswith("model.") else key): value for key, value in state_dict.items()}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


class ViewClassifier(_ImageClassifier):
    """ViT over PA / AP / LATERAL / OTHER, trained with cross-entropy on the batch's `view` index.

    Args:
        name_or_path: hub id or local folder of a ViT (paper scale); exclusive with `config`.
        config: a `ViTConfig` dict for a random-weight model (tiny); `image_size` there is the
            size the position embeddings are built for.
        image_size: input size in pixels; must be divisible by the ViT patch size. Position
            embeddings are interpolated when it differs from the backbone's.
        image_mean, image_std: normalisation the DataModule and `preprocess` apply (per RGB channel).
        learning_rate, weight_decay, warmup_steps: AdamW and a linear warm-up (steps).
        lr_decay: after the warm-up, `none` (constant) or `cosine` (to 0 at the run's last step).
        init_seed: seed of the random init for config-built backbones (rebuilt identically at export).
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        config: dict[str, Any] | None = None,
        image_size: int = 224,
        image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        image_std: tuple[float, float, float] = (0.5, 0.5, 0.5),
        learning_rate: float = 1e-4,
        weight_decay: float = 0.05,
        warmup_steps: int = 0,
        init_seed: int = 0,
        lr_decay: str = "none",
    ) -> None:
        super().__init__()
        if lr_decay not in LR_DECAYS:
            raise ValueError(f"`lr_decay`={lr_decay!r} must be one of {LR_DECAYS}")
        self.save_hyperparameters()
        self.core = build_view_classifier(name_or_path, config, image_size, image_mean, image_std, init_seed)
        self.eval_losses = eval_loss_metrics()
        from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC

        n = len(VIEW_CLASSES)
        self.val_accuracy, self.test_accuracy = (
            MulticlassAccuracy(n, average="micro"),
            MulticlassAccuracy(n, average="micro"),
        )
        self.val_auroc, self.test_auroc = MulticlassAUROC(n), MulticlassAUROC(n)

    def compute_loss(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Cross-entropy of the batch's `view` indices; returns (loss, logits)."""
        logits = self.logits(batch["pixel_values"]).float()
        return F.cross_entropy(logits, batch["view"].long()), logits

    def _step(self, batch: dict[str, Any], stage: str) -> Tensor:
        loss, logits = self.compute_loss(batch)
        target = batch["view"].long()
        batch_size = target.shape[0]
        if stage == "train":
            self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        else:
            log_eval_loss(self, stage, loss, batch_size)
            accuracy, auroc = (
                (self.val_accuracy, self.val_auroc) if stage == "val" else (self.test_accuracy, self.test_auroc)
            )
            probs = logits.detach().float().softmax(-1)
            accuracy.update(probs, target)
            auroc.update(probs, target)
            self.log(f"{stage}/accuracy", accuracy, batch_size=batch_size)
            self.log(f"{stage}/auroc", auroc, batch_size=batch_size)
        return loss


class FindingsClassifier(_ImageClassifier):
    """ResNet over the 14 CheXpert labels: multi-label BCE averaged over the labels `label_mask` keeps.

    The DataModule applies the uncertain-label policy and sends float `labels` with a
    `label_mask`; `uncertain_policy` is recorded here so a checkpoint says how it was trained.

    Args:
        name_or_path / config: a ResNet hub id or folder, or a `ResNetConfig` dict (tiny).
        image_size: input size in pixels (>= 32: the ResNet stem and stages downsample 32x).
        uncertain_policy: "zeros", "ones" or "ignore" (how -1 labels were mapped by the data).
        positive_weight: weight of positive entries in the BCE (findings are rare: most labels of most
            images are negative, and an unweighted loss learns "absent" first).
        Others as in `ViewClassifier`; the default normalisation is ImageNet's, as for hub ResNets.
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        config: dict[str, Any] | None = None,
        image_size: int = 224,
        image_mean: tuple[float, float, float] = IMAGENET_MEAN,
        image_std: tuple[float, float, float] = IMAGENET_STD,
        uncertain_policy: str = "ones",
        learning_rate: float = 1e-4,
        weight_decay: float = 1e-4,
        warmup_steps: int = 0,
        init_seed: int = 0,
        lr_decay: str = "none",
        positive_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if lr_decay not in LR_DECAYS or positive_weight <= 0:
            raise ValueError(
                f"`lr_decay`={lr_decay!r} must be one of {LR_DECAYS} and `positive_weight`={positive_weight} > 0"
            )
        self.save_hyperparameters()
        self.core = build_findings_classifier(
            name_or_path, config, image_size, image_mean, image_std, uncertain_policy, init_seed
        )
        self.eval_losses = eval_loss_metrics()
        from torchmetrics.classification import MultilabelAccuracy

        n = len(CHEXPERT_LABELS)
        self.val_accuracy, self.test_accuracy = (MultilabelAccuracy(n, ignore_index=-1) for _ in range(2))
        # AUROC is computed on the whole gathered split at epoch end, per label, and macro-averaged only over
        # labels with positives and negatives: torchmetrics' multilabel AUROC crashes on a label whose
        # entries are all ignored and counts a label without positives as 0.
        self._auroc_buffers: dict[str, list[tuple[Tensor, Tensor]]] = {}

    def compute_loss(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """BCE averaged over the (sample, label) entries `label_mask` keeps; returns (loss, logits)."""
        logits = self.logits(batch["pixel_values"]).float()
        target = batch["labels"].float()
        mask = batch.get("label_mask")
        mask = torch.ones_like(target) if mask is None else mask.float()
        weight = 1.0 + (self.hparams.get("positive_weight", 1.0) - 1.0) * target
        per_label = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight
        return (per_label * mask).sum() / mask.sum().clamp_min(1.0), logits

    def _step(self, batch: dict[str, Any], stage: str) -> Tensor:
        loss, logits = self.compute_loss(batch)
        target = batch["labels"].float()
        mask = batch.get("label_mask")
        mask = torch.ones_like(target) if mask is None else mask.float()
        batch_size = target.shape[0]
        if stage == "train":
            self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        else:
            log_eval_loss(self, stage, loss, mask.sum())  # the loss is a mean over the batch's known labels
            accuracy = self.val_accuracy if stage == "val" else self.test_accuracy
            int_target = torch.where(mask > 0, target.round().long(), torch.full_like(target, -1, dtype=torch.long))
            probs = logits.detach().sigmoid()
            accuracy.update(probs, int_target)
            self._auroc_buffers.setdefault(stage, []).append((probs.float().cpu(), int_target.cpu()))
            self.log(f"{stage}/accuracy", accuracy, batch_size=batch_size)
        return loss

    def macro_auroc(self, probs: Tensor, int_target: Tensor) -> float:
        """Mean per-label AUROC over labels with both classes among kept entries (-1 = ignored); nan if none."""
        from lit_medxchat.core.auroc import macro_auroc

        return macro_auroc(int_target.numpy(), probs.double().numpy())

    def _log_epoch_auroc(self, stage: str) -> None:
        from lit_medxchat.core.distributed import gather_lists

        parts = gather_lists(self._auroc_buffers.pop(stage, []))  # every rank's batches, unequal counts allowed
        if not parts:
            return
        value = self.macro_auroc(torch.cat([p for p, _ in parts]), torch.cat([t for _, t in parts]))
        if value == value:
            self.log(f"{stage}/auroc", value)  # the same value on every rank: no reduction needed

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_auroc("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_auroc("test")


def tiny_view_kwargs(image_size: int = 32) -> dict[str, Any]:
    """`ViewClassifier` arguments for a random-weight ViT that trains in milliseconds (tests, CPU demos)."""
    config = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "image_size": image_size,
        "patch_size": 8,
    }
    return {"config": config, "image_size": image_size, "learning_rate": 1e-3}


def tiny_findings_kwargs(image_size: int = 32) -> dict[str, Any]:
    """`FindingsClassifier` arguments for a random-weight 4-stage x 1-block ResNet (tests, CPU demos)."""
    config = {"embedding_size": 8, "hidden_sizes": [8, 16, 16, 32], "depths": [1, 1, 1, 1]}
    return {"config": config, "image_size": image_size, "learning_rate": 1e-3}
