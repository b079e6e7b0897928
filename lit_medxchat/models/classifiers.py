"""The view classifier (ViT over `VIEW_CLASSES`) and the findings classifier (ResNet over the 14 CheXpert labels).

The view classifier supplies the view sentence prepended to reports when `ViewPosition` is missing
(paper §3.1). The findings classifier is the judge of generated images (paper §4.2) and the
domain feature extractor for FID, so beyond training it offers `preprocess`, `features` and
`predict_proba` taking images in [0, 1] at any size, as the metric callbacks hold them.

Both are thin LightningModules around transformers models built by `build_view_backbone` /
`build_findings_backbone` from a hub id / local folder (`name_or_path`) or a config dict (tiny,
random weights drawn under `init_seed`).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_medxchat.core.constants import CHEXPERT_LABELS, VIEW_CLASSES
from lit_medxchat.models.checkpoint_io import TrainableOnlyCheckpoint, seeded_init

UNCERTAIN_POLICIES = ("zeros", "ones", "ignore")
LR_DECAYS = ("none", "cosine")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _label_maps(names: tuple[str, ...]) -> dict[str, Any]:
    return {"id2label": dict(enumerate(names)), "label2id": {name: i for i, name in enumerate(names)}}


def _build_image_classifier(
    expected_type: str,
    names: tuple[str, ...],
    name_or_path: str | None,
    config: dict[str, Any] | None,
    init_seed: int,
    extra: dict[str, Any],
) -> nn.Module:
    """Build a transformers image classifier of `expected_type` ("vit" or "resnet") with one logit per name."""
    from transformers import (
        AutoConfig,
        ResNetConfig,
        ResNetForImageClassification,
        ViTConfig,
        ViTForImageClassification,
    )

    classes = {"vit": (ViTConfig, ViTForImageClassification), "resnet": (ResNetConfig, ResNetForImageClassification)}
    config_cls, model_cls = classes[expected_type]
    if (name_or_path is None) == (config is None):
        raise ValueError(
            f"give exactly one of `name_or_path` (hub id or folder) or `config` (a {config_cls.__name__} dict) "
            f"for the {expected_type} classifier; got name_or_path={name_or_path!r}, config={config!r}"
        )
    labels = {"num_labels": len(names), **_label_maps(names), **extra}
    if name_or_path is not None:
        model_type = AutoConfig.from_pretrained(name_or_path).model_type
        if model_type != expected_type:
            raise ValueError(
                f"`name_or_path`={name_or_path!r} is a {model_type!r} model; this classifier needs a "
                f"{expected_type!r} backbone"
            )
        return model_cls.from_pretrained(name_or_path, ignore_mismatched_sizes=True, **labels)
    config = dict(config)
    model_type = config.pop("model_type", expected_type)
    if model_type != expected_type:
        raise ValueError(f"`config.model_type`={model_type!r} is not supported here: use {expected_type!r}")
    try:
        hf_config = config_cls(**config, **labels)
    except TypeError as error:
        raise ValueError(f"`config` is not a valid {config_cls.__name__}: {error}") from error
    try:
        with seeded_init(init_seed):
            return model_cls(hf_config)
    except ValueError as error:  # e.g. hidden size not divisible by the number of heads
        raise ValueError(f"`config` does not build a {model_cls.__name__}: {error}") from error


def build_view_backbone(
    name_or_path: str | None = None, config: dict[str, Any] | None = None, init_seed: int = 0
) -> nn.Module:
    """A `ViTForImageClassification` with one logit per `VIEW_CLASSES` entry."""
    return _build_image_classifier("vit", VIEW_CLASSES, name_or_path, config, init_seed, {})


def build_findings_backbone(
    name_or_path: str | None = None, config: dict[str, Any] | None = None, init_seed: int = 0
) -> nn.Module:
    """A `ResNetForImageClassification` with one sigmoid logit per `CHEXPERT_LABELS` entry."""
    extra = {"problem_type": "multi_label_classification"}
    return _build_image_classifier("resnet", CHEXPERT_LABELS, name_or_path, config, init_seed, extra)


def _linear_warmup(warmup_steps: int):
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def _warmup_cosine(warmup_steps: int, total_steps: int):
    """Linear warm-up, then cosine decay to 0 at `total_steps`: short CPU runs end at a low learning rate,
    which is worth several epochs of constant-rate training on small data."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class _ImageClassifier(TrainableOnlyCheckpoint, L.LightningModule):
    """Shared preprocessing, optimiser and export of the two classifiers (every weight trains)."""

    model: nn.Module
    num_features: int

    def _init_common(self, image_size: int, image_mean, image_std) -> None:
        if len(image_mean) != 3 or len(image_std) != 3 or min(image_std) <= 0:
            raise ValueError(f"`image_mean`/`image_std` need 3 values, std > 0; got {image_mean} / {image_std}")
        self.image_size = int(image_size)
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        self.register_buffer("_mean", torch.tensor(self.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.image_std).view(1, 3, 1, 1), persistent=False)

    # ---- inference API used by the metric callbacks and the data pipeline ------------------------
    def preprocess(self, images01: Tensor) -> Tensor:
        """Images (B, 1|3, H, W) in [0, 1], any size -> normalised (B, 3, S, S) at this model's input size.

        Antialiased bilinear resize, so downscaling a 512 px CXR does not alias ribs into moiré.
        """
        if images01.ndim != 4 or images01.shape[1] not in (1, 3):
            raise ValueError(f"images01 must be (B, 1|3, H, W) in [0, 1]; got shape {tuple(images01.shape)}")
        images = images01.to(self._mean.device, torch.float32)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if images.shape[-2:] != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            images = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
        return (images - self._mean) / self._std

    @contextlib.contextmanager
    def _judging(self) -> Iterator[None]:
        """Eval mode for the judge/FID calls, restored after: BatchNorm statistics must not drift
        while the classifier scores generated images, and dropout must not randomise its verdict."""
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def logits(self, pixel_values: Tensor) -> Tensor:
        return self.model(pixel_values=pixel_values, **self._forward_kwargs()).logits

    def _forward_kwargs(self) -> dict[str, Any]:
        return {}

    @torch.no_grad()
    def features(self, images01: Tensor) -> Tensor:
        """Penultimate pooled features (B, `num_features`) of images in [0, 1] (FID / judge features)."""
        with self._judging():
            return self._pooled(self.preprocess(images01)).float()

    # ---- training -------------------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            [p for p in self.parameters() if p.requires_grad],
            lr=self.hparams.learning_rate,
            weight_decay=self.hparams.weight_decay,
        )
        warmup = self.hparams.warmup_steps
        if self.hparams.get("lr_decay", "none") == "cosine":
            schedule = _warmup_cosine(warmup, int(self.trainer.estimated_stepping_batches))
        else:
            schedule = _linear_warmup(warmup)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    # ---- export ---------------------------------------------------------------------------------
    def export_pretrained(self, out_dir: str | Path) -> list[Path]:
        """Write the classifier in transformers format (+ an image-processor config) to `out_dir`.

        `AutoModelForImageClassification.from_pretrained(out_dir)` and `load_classifier(out_dir)`
        both load it; `AutoImageProcessor.from_pretrained(out_dir)` reproduces `preprocess`
        (except the antialiasing of PIL vs torch resizing).
        """
        from transformers import ViTImageProcessor

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out_dir)
        processor = ViTImageProcessor(
            do_resize=True,
            size={"height": self.image_size, "width": self.image_size},
            image_mean=list(self.image_mean),
            image_std=list(self.image_std),
        )
        processor.save_pretrained(out_dir)
        notes = {"module_class": type(self).__name__, **self._export_notes()}
        (out_dir / "lit_medxchat.json").write_text(json.dumps(notes, indent=2) + "\n")
        return sorted(p for p in out_dir.rglob("*") if p.is_file())

    def _export_notes(self) -> dict[str, Any]:
        return {}


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
        self._init_common(image_size, image_mean, image_std)
        self.model = build_view_backbone(name_or_path, config, init_seed)
        patch = self.model.config.patch_size
        if self.image_size % patch:
            raise ValueError(
                f"`image_size`={self.image_size} is not divisible by the ViT patch size {patch}: "
                f"use a multiple of {patch}, e.g. {math.ceil(self.image_size / patch) * patch}"
            )
        self.num_features = self.model.config.hidden_size
        from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC

        n = len(VIEW_CLASSES)
        self.val_accuracy, self.test_accuracy = (
            MulticlassAccuracy(n, average="micro"),
            MulticlassAccuracy(n, average="micro"),
        )
        self.val_auroc, self.test_auroc = MulticlassAUROC(n), MulticlassAUROC(n)

    def _forward_kwargs(self) -> dict[str, Any]:
        return {"interpolate_pos_encoding": self.image_size != self.model.config.image_size}

    def _pooled(self, pixel_values: Tensor) -> Tensor:
        hidden = self.model.vit(pixel_values, **self._forward_kwargs()).last_hidden_state
        return hidden[:, 0]  # the [CLS] token after the final layer norm, what the head reads

    @torch.no_grad()
    def predict_proba(self, images01: Tensor) -> Tensor:
        """Softmax over `VIEW_CLASSES`, (B, 4), for images (B, 1|3, H, W) in [0, 1]."""
        with self._judging():
            return self.logits(self.preprocess(images01)).float().softmax(-1)

    def compute_loss(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Cross-entropy of the batch's `view` indices; returns (loss, logits)."""
        logits = self.logits(batch["pixel_values"]).float()
        return F.cross_entropy(logits, batch["view"].long()), logits

    def _step(self, batch: dict[str, Any], stage: str) -> Tensor:
        loss, logits = self.compute_loss(batch)
        target = batch["view"].long()
        batch_size = target.shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=stage != "train", batch_size=batch_size)
        if stage != "train":
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
        if uncertain_policy not in UNCERTAIN_POLICIES:
            raise ValueError(f"`uncertain_policy`={uncertain_policy!r}: choose one of {UNCERTAIN_POLICIES}")
        if image_size < 32:
            raise ValueError(f"`image_size`={image_size} is too small for a ResNet (downsamples 32x): use >= 32")
        self.save_hyperparameters()
        self._init_common(image_size, image_mean, image_std)
        self.model = build_findings_backbone(name_or_path, config, init_seed)
        self.num_features = self.model.config.hidden_sizes[-1]
        from torchmetrics.classification import MultilabelAccuracy

        n = len(CHEXPERT_LABELS)
        self.val_accuracy, self.test_accuracy = (MultilabelAccuracy(n, ignore_index=-1) for _ in range(2))
        # AUROC is computed on the whole gathered split at epoch end, per label, and macro-averaged only over
        # labels with positives and negatives: torchmetrics' multilabel AUROC crashes on a label whose
        # entries are all ignored and counts a label without positives as 0.
        self._auroc_buffers: dict[str, list[tuple[Tensor, Tensor]]] = {}

    def _pooled(self, pixel_values: Tensor) -> Tensor:
        return self.model.resnet(pixel_values).pooler_output.flatten(1)

    @torch.no_grad()
    def predict_proba(self, images01: Tensor) -> Tensor:
        """Sigmoid probability of each of `CHEXPERT_LABELS`, (B, 14), for images in [0, 1]."""
        with self._judging():
            return self.logits(self.preprocess(images01)).float().sigmoid()

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
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=stage != "train", batch_size=batch_size)
        if stage != "train":
            accuracy = self.val_accuracy if stage == "val" else self.test_accuracy
            int_target = torch.where(mask > 0, target.round().long(), torch.full_like(target, -1, dtype=torch.long))
            probs = logits.detach().sigmoid()
            accuracy.update(probs, int_target)
            self._auroc_buffers.setdefault(stage, []).append((probs.float().cpu(), int_target.cpu()))
            self.log(f"{stage}/accuracy", accuracy, batch_size=batch_size)
        return loss

    def macro_auroc(self, probs: Tensor, int_target: Tensor) -> float:
        """Mean per-label AUROC over labels with both classes among kept entries (-1 = ignored); nan if none."""
        from callbacks.scoring.clinical import binary_auroc

        values = []
        for j in range(probs.shape[1]):
            keep = int_target[:, j] >= 0
            value = binary_auroc(int_target[keep, j].numpy() == 1, probs[keep, j].double().numpy())
            if value == value:  # not nan
                values.append(value)
        return sum(values) / len(values) if values else float("nan")

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

    def _export_notes(self) -> dict[str, Any]:
        return {"uncertain_policy": self.hparams.uncertain_policy}


def load_classifier(path: str | Path, map_location: str | torch.device = "cpu") -> ViewClassifier | FindingsClassifier:
    """Load a classifier from a Lightning checkpoint file or an exported transformers folder.

    The class is read from the checkpoint (`module_class`) or from the folder's `config.json`
    (`vit` -> ViewClassifier, `resnet` -> FindingsClassifier). Returned in eval mode.
    """
    path = Path(path)
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{path}: no config.json; export a classifier with `lit-medxchat export` first")
        model_type = json.loads(config_file.read_text()).get("model_type")
        cls = {"vit": ViewClassifier, "resnet": FindingsClassifier}.get(model_type)
        if cls is None:
            raise ValueError(
                f"{config_file}: model_type {model_type!r} is neither a view (vit) nor findings (resnet) model"
            )
        kwargs: dict[str, Any] = {"name_or_path": str(path)}
        processor_file = path / "preprocessor_config.json"
        if processor_file.is_file():
            processor = json.loads(processor_file.read_text())
            kwargs.update(
                image_size=processor["size"]["height"],
                image_mean=tuple(processor["image_mean"]),
                image_std=tuple(processor["image_std"]),
            )
        notes_file = path / "lit_medxchat.json"
        if cls is FindingsClassifier and notes_file.is_file():
            kwargs["uncertain_policy"] = json.loads(notes_file.read_text()).get("uncertain_policy", "ones")
        module = cls(**kwargs)
    elif path.is_file():
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        class_name = str(checkpoint.get("module_class", "")).rsplit(".", 1)[-1]
        cls = {"ViewClassifier": ViewClassifier, "FindingsClassifier": FindingsClassifier}.get(class_name)
        if cls is None:
            raise ValueError(f"{path}: checkpoint of {class_name or 'an unknown module'!r}, not a classifier")
        module = cls.load_from_checkpoint(path, map_location=map_location)
    else:
        raise FileNotFoundError(f"{path}: no such checkpoint file or exported folder")
    return module.to(map_location).eval()


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
