"""The view and findings classifiers as plain `nn.Module`s: a transformers backbone and its preprocessing.

The view classifier (ViT over `VIEW_CLASSES`) supplies the view sentence prepended to reports when
`ViewPosition` is missing (paper §3.1). The findings classifier (ResNet over the 14 CheXpert labels)
is the judge of generated images (paper §4.2) and the domain feature extractor for FID. Data
preparation, the metric callbacks, the demo and the web chat use them without training them, so
this module imports no Lightning: `load_classifier` reads a Lightning checkpoint (through the
weights-only reader and the model registry) or an exported transformers folder and returns an
`ImageClassifierCore`. Training lives in `lit_medxchat.models.classifiers`, whose LightningModules
hold one of these cores.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_medxchat.core.checkpoint_files import load_checkpoint_file
from lit_medxchat.core.constants import CHEXPERT_LABELS, VIEW_CLASSES
from lit_medxchat.models.checkpoint_io import load_trainable_state_dict, seeded_init
from lit_medxchat.models.registry import checkpoint_model_name, core_class

UNCERTAIN_POLICIES = ("zeros", "ones", "ignore")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The LightningModule that trains each kind: checkpoints and exports name it, the registry maps it back here.
MODULE_OF_KIND = {"view": "ViewClassifier", "findings": "FindingsClassifier"}
KIND_OF_MODULE = {module: kind for kind, module in MODULE_OF_KIND.items()}
KIND_OF_MODEL_TYPE = {"vit": "view", "resnet": "findings"}


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


class ImageClassifierCore(nn.Module):
    """A transformers image classifier with the preprocessing it was trained with, for images in [0, 1].

    Build one with `build_view_classifier` / `build_findings_classifier`, `from_checkpoint` or
    `load_classifier`. `kind` ("view" or "findings") says which: callers that need a view classifier
    check it rather than the class.

    Attributes:
        kind: "view" (softmax over `VIEW_CLASSES`) or "findings" (sigmoid per `CHEXPERT_LABELS` entry).
        label_names: the name of each output column.
        model: the transformers `ViTForImageClassification` / `ResNetForImageClassification`.
        image_size, image_mean, image_std: the input size in pixels and the per-RGB-channel normalisation.
        num_features: width of `features` (the penultimate pooled features).
        uncertain_policy: findings only: how uncertain (-1) labels were mapped in training.
    """

    def __init__(
        self,
        kind: str,
        model: nn.Module,
        image_size: int,
        image_mean: tuple[float, float, float],
        image_std: tuple[float, float, float],
        uncertain_policy: str | None = None,
    ) -> None:
        super().__init__()
        if kind not in MODULE_OF_KIND:
            raise ValueError(f"classifier kind {kind!r}: use one of {sorted(MODULE_OF_KIND)}")
        if len(image_mean) != 3 or len(image_std) != 3 or min(image_std) <= 0:
            raise ValueError(f"`image_mean`/`image_std` need 3 values, std > 0; got {image_mean} / {image_std}")
        self.kind = kind
        self.label_names = VIEW_CLASSES if kind == "view" else CHEXPERT_LABELS
        self.model = model
        self.image_size = int(image_size)
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        self.uncertain_policy = uncertain_policy
        if kind == "view":
            self.num_features = int(model.config.hidden_size)
        else:
            self.num_features = int(model.config.hidden_sizes[-1])
        self.register_buffer("_mean", torch.tensor(self.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.image_std).view(1, 3, 1, 1), persistent=False)

    # ---- inference API used by the metric callbacks, the data pipeline and the web chat ------------
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

    def _forward_kwargs(self) -> dict[str, Any]:
        if self.kind == "view":  # a ViT run at another size than it was built for interpolates its positions
            return {"interpolate_pos_encoding": self.image_size != self.model.config.image_size}
        return {}

    def forward(self, pixel_values: Tensor) -> Tensor:
        """Logits (B, len(label_names)) of already preprocessed (B, 3, S, S) pixel values."""
        return self.model(pixel_values=self._as_weights(pixel_values), **self._forward_kwargs()).logits

    def _as_weights(self, pixel_values: Tensor) -> Tensor:
        """Pixels in the weights' dtype: DeepSpeed's bf16 casts the whole model, and ResNet's batch norm then refuses
        float32 inputs (ViT casts them itself)."""
        return pixel_values.to(next(self.model.parameters()).dtype)

    def logits(self, pixel_values: Tensor) -> Tensor:
        """The same as calling the module: logits of preprocessed pixel values (what the losses read)."""
        return self(pixel_values)

    def _pooled(self, pixel_values: Tensor) -> Tensor:
        pixel_values = self._as_weights(pixel_values)
        if self.kind == "view":
            hidden = self.model.vit(pixel_values, **self._forward_kwargs()).last_hidden_state
            return hidden[:, 0]  # the [CLS] token after the final layer norm, what the head reads
        return self.model.resnet(pixel_values).pooler_output.flatten(1)

    @torch.no_grad()
    def features(self, images01: Tensor) -> Tensor:
        """Penultimate pooled features (B, `num_features`) of images in [0, 1] (FID / judge features)."""
        with self._judging():
            return self._pooled(self.preprocess(images01)).float()

    @torch.no_grad()
    def predict_proba(self, images01: Tensor) -> Tensor:
        """For images (B, 1|3, H, W) in [0, 1]: view: softmax (B, 4); findings: sigmoid per label (B, 14)."""
        with self._judging():
            logits = self.logits(self.preprocess(images01)).float()
        return logits.softmax(-1) if self.kind == "view" else logits.sigmoid()

    # ---- export and loading ---------------------------------------------------------------------
    def export_pretrained(self, out_dir: str | Path) -> list[Path]:
        """Write the classifier in transformers format (+ an image-processor config) to `out_dir`.

        `AutoModelForImageClassification.from_pretrained(out_dir)` and `load_classifier(out_dir)`
        both load it; `AutoImageProcessor.from_pretrained(out_dir)` reproduces `preprocess`
        (except the antialiasing of PIL vs torch resizing).
        """
        import transformers

        # The PIL backend needs no torchvision (asking for `ViTImageProcessor` without it logs a fallback notice);
        # both write the same preprocessor_config.json.
        processor_class = getattr(transformers, "ViTImageProcessorPil", None) or transformers.ViTImageProcessor

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out_dir)
        processor = processor_class(
            do_resize=True,
            size={"height": self.image_size, "width": self.image_size},
            image_mean=list(self.image_mean),
            image_std=list(self.image_std),
        )
        processor.save_pretrained(out_dir)
        notes: dict[str, Any] = {"module_class": MODULE_OF_KIND[self.kind]}
        if self.kind == "findings":
            notes["uncertain_policy"] = self.uncertain_policy
        (out_dir / "lit_medxchat.json").write_text(json.dumps(notes, indent=2) + "\n")
        return sorted(p for p in out_dir.rglob("*") if p.is_file())

    @classmethod
    def from_checkpoint(
        cls, checkpoint: dict[str, Any], map_location: str | torch.device = "cpu", **overrides: Any
    ) -> ImageClassifierCore:
        """The classifier a `ViewClassifier` / `FindingsClassifier` checkpoint holds, in eval mode.

        Built from the checkpoint's hyper-parameters (the builder's arguments among them; `overrides`,
        e.g. `name_or_path=` for a backbone folder that moved, replace them) with its trained weights
        loaded under the strict key check of `checkpoint_io.load_trainable_state_dict`.
        """
        name = checkpoint_model_name(checkpoint)
        kind = KIND_OF_MODULE.get(name)
        if kind is None:
            raise ValueError(f"checkpoint of {name!r}, not a classifier ({' or '.join(KIND_OF_MODULE)})")
        builder = BUILDERS[kind]
        accepted = set(inspect.signature(builder).parameters)
        unknown = sorted(set(overrides) - accepted)
        if unknown:
            raise ValueError(f"overrides {unknown} are not arguments of {builder.__name__}: use {sorted(accepted)}")
        hparams = checkpoint.get("hyper_parameters") or {}
        core = builder(**{**{key: value for key, value in hparams.items() if key in accepted}, **overrides})
        if "state_dict" not in checkpoint:
            raise ValueError(f"{name} checkpoint has no `state_dict`: not a Lightning checkpoint of this project")
        load_trainable_state_dict(core, _core_state_dict(checkpoint["state_dict"]), f"{name} checkpoint")
        return core.to(map_location).eval()

    @classmethod
    def from_exported(cls, folder: str | Path) -> ImageClassifierCore:
        """The classifier `export_pretrained` wrote to `folder` (the backbone type says which kind), in eval mode."""
        folder = Path(folder)
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{folder}: no config.json; export a classifier with `lit-medxchat export` first")
        model_type = json.loads(config_file.read_text()).get("model_type")
        kind = KIND_OF_MODEL_TYPE.get(model_type)
        if kind is None:
            raise ValueError(
                f"{config_file}: model_type {model_type!r} is neither a view (vit) nor findings (resnet) model"
            )
        kwargs: dict[str, Any] = {"name_or_path": str(folder)}
        processor_file = folder / "preprocessor_config.json"
        if processor_file.is_file():
            processor = json.loads(processor_file.read_text())
            kwargs.update(
                image_size=processor["size"]["height"],
                image_mean=tuple(processor["image_mean"]),
                image_std=tuple(processor["image_std"]),
            )
        notes_file = folder / "lit_medxchat.json"
        if kind == "findings" and notes_file.is_file():
            kwargs["uncertain_policy"] = json.loads(notes_file.read_text()).get("uncertain_policy") or "ones"
        return BUILDERS[kind](**kwargs).eval()


def _core_state_dict(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """The core's keys in a wrapper's state dict: the wrapper holds the core as `core`.

    Checkpoints written before the wrapper held a core have the backbone at `model.` already.
    """
    return {key.removeprefix("core."): value for key, value in state_dict.items()}


def build_view_classifier(
    name_or_path: str | None = None,
    config: dict[str, Any] | None = None,
    image_size: int = 224,
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5),
    init_seed: int = 0,
) -> ImageClassifierCore:
    """The view classifier: a ViT (hub id / folder, or a `ViTConfig` dict drawn under `init_seed`).

    `image_size` must be divisible by the ViT patch size; position embeddings are interpolated when
    it differs from the backbone's.
    """
    backbone = build_view_backbone(name_or_path, config, init_seed)
    patch = backbone.config.patch_size
    if int(image_size) % patch:
        raise ValueError(
            f"`image_size`={image_size} is not divisible by the ViT patch size {patch}: "
            f"use a multiple of {patch}, e.g. {math.ceil(int(image_size) / patch) * patch}"
        )
    return ImageClassifierCore("view", backbone, image_size, image_mean, image_std)


def build_findings_classifier(
    name_or_path: str | None = None,
    config: dict[str, Any] | None = None,
    image_size: int = 224,
    image_mean: tuple[float, float, float] = IMAGENET_MEAN,
    image_std: tuple[float, float, float] = IMAGENET_STD,
    uncertain_policy: str = "ones",
    init_seed: int = 0,
) -> ImageClassifierCore:
    """The findings classifier: a ResNet (hub id / folder, or a `ResNetConfig` dict drawn under `init_seed`).

    `image_size` must be >= 32 (the ResNet stem and stages downsample 32x); `uncertain_policy`
    ("zeros", "ones" or "ignore") records how the training data mapped uncertain labels.
    """
    if uncertain_policy not in UNCERTAIN_POLICIES:
        raise ValueError(f"`uncertain_policy`={uncertain_policy!r}: choose one of {UNCERTAIN_POLICIES}")
    if image_size < 32:
        raise ValueError(f"`image_size`={image_size} is too small for a ResNet (downsamples 32x): use >= 32")
    backbone = build_findings_backbone(name_or_path, config, init_seed)
    return ImageClassifierCore("findings", backbone, image_size, image_mean, image_std, uncertain_policy)


BUILDERS: dict[str, Callable[..., ImageClassifierCore]] = {
    "view": build_view_classifier,
    "findings": build_findings_classifier,
}


def load_classifier(path: str | Path, map_location: str | torch.device = "cpu") -> ImageClassifierCore:
    """Load a classifier from a Lightning checkpoint file or an exported transformers folder, in eval mode.

    A file is read with the weights-only reader (a checkpoint that pickles an object is refused, naming
    it) and must name `ViewClassifier` or `FindingsClassifier`; a class that is not ours is refused
    without being imported. A folder's `config.json` says the kind (`vit` -> view, `resnet` -> findings).
    """
    path = Path(path)
    if path.is_dir():
        return ImageClassifierCore.from_exported(path).to(map_location)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file or exported folder")
    checkpoint = load_checkpoint_file(path)
    name = checkpoint_model_name(checkpoint, path)
    if name not in KIND_OF_MODULE:
        raise ValueError(f"{path}: checkpoint of {name!r}, not a classifier ({' or '.join(KIND_OF_MODULE)})")
    return core_class(name).from_checkpoint(checkpoint, map_location=map_location)
