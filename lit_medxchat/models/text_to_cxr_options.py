"""The option groups of CXR-SD (text-to-CXR), free of Lightning.

They are the typed `__init__` arguments of `CXRDiffusion` (LightningCLI turns their docstrings into
`--model.base.*`, `--model.branch.*`, ... help) and, for `base`, `branch` and `sampling`, of the plain
core `TextToCXR`. Checkpoints store them as plain dicts (`dataclasses.asdict`), so
`torch.load(weights_only=True)` reads them back; `as_options` turns either form into the dataclass and
`grouped_hyper_parameters` reads a checkpoint's (also one written before the groups existed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class SDBaseOptions:
    """The frozen Stable Diffusion: VAE, UNet, CLIP text encoder and tokenizer.

    Attributes:
        name_or_path: a Stable Diffusion hub id or folder with vae/, unet/, text_encoder/, tokenizer/
            (paper scale: an SD-1.5/2.1-class model). Exclusive with the three config dicts.
        vae_config: `AutoencoderKL` keyword dict for a random-weight (tiny) VAE, drawn under `init_seed`.
        unet_config: `UNet2DConditionModel` keyword dict for a random-weight UNet.
        text_encoder_config: `CLIPTextConfig` keyword dict for a random-weight text encoder; its
            `max_position_embeddings` is the report window in tokens.
        tokenizer_name_or_path: a CLIP tokenizer folder; by default SD's, or (config-built bases) a
            small one learnt from a built-in corpus with `tokenizer_vocab_size` tokens.
        tokenizer_vocab_size: size of that built-in tokenizer.
        frozen_dtype: dtype of the frozen parts (`float32`, `bfloat16`, `float16`; low precision for
            GPU); the trainable branch stays float32.
        gradient_checkpointing: in training, keep only the inputs of the UNet's and the control copy's blocks and
            recompute each block in the backward pass (diffusers' own checkpointing): the activations of a
            512-px UNet shrink to about one block's, for one more forward of the UNet per step (`lit-medxchat plan`
            shows the memory with and without). Losses and gradients are unchanged.
    """

    name_or_path: str | None = None
    vae_config: dict[str, Any] | None = None
    unet_config: dict[str, Any] | None = None
    text_encoder_config: dict[str, Any] | None = None
    tokenizer_name_or_path: str | None = None
    tokenizer_vocab_size: int = 1000
    frozen_dtype: str = "float32"
    gradient_checkpointing: bool = False


@dataclass
class BranchOptions:
    """The trainable text-driven ControlNet copy (its text-to-hint cross-attention).

    Attributes:
        hint_hidden_dim: width of the text-to-hint cross-attention.
        hint_num_heads: its attention heads (must divide `hint_hidden_dim`).
    """

    hint_hidden_dim: int = 256
    hint_num_heads: int = 4


@dataclass
class SamplingOptions:
    """Sampling in validation/test and the sampler written by export.

    Attributes:
        sampler: `ddim` or `dpm-solver` (DPM-Solver++ 2M).
        num_inference_steps: denoising steps of validation generation.
        guidance_scale: classifier-free guidance weight of validation generation (<= 1: off).
        val_generate_batches: how many validation/test batches per epoch (per rank) also generate
            images for the metric callbacks.
    """

    sampler: str = "ddim"
    num_inference_steps: int = 20
    guidance_scale: float = 3.0
    val_generate_batches: int = 1


@dataclass
class TrainingOptions:
    """How the branch trains: AdamW with linear warm-up, and report dropout for guidance.

    Attributes:
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up, in optimiser steps.
        cfg_dropout_prob: probability of replacing a report by "" (classifier-free guidance), in [0, 1).
    """

    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    cfg_dropout_prob: float = 0.1


@dataclass
class EMAOptions:
    """Exponential moving average of the trainable weights, used for sampling and export.

    Attributes:
        decay: EMA decay in (0, 1), e.g. 0.9999; None turns EMA off.
    """

    decay: float | None = None


# Option group name -> dataclass, in the order of the LightningModule's arguments.
OPTION_GROUPS: dict[str, type] = {
    "base": SDBaseOptions,
    "branch": BranchOptions,
    "sampling": SamplingOptions,
    "training": TrainingOptions,
    "ema": EMAOptions,
}
# Top-level hyper-parameters beside the groups, with their defaults.
TOP_LEVEL_DEFAULTS: dict[str, Any] = {"image_size": 512, "init_seed": 0, "seed": 0}
# Flat argument names of checkpoints written before the option groups -> their group.
_FLAT_FIELDS: dict[str, tuple[str, str]] = {
    **{f.name: ("base", f.name) for f in fields(SDBaseOptions)},
    **{f.name: ("branch", f.name) for f in fields(BranchOptions)},
    **{f.name: ("sampling", f.name) for f in fields(SamplingOptions)},
    "learning_rate": ("training", "lr"),
    "weight_decay": ("training", "weight_decay"),
    "warmup_steps": ("training", "warmup_steps"),
    "cfg_dropout_prob": ("training", "cfg_dropout_prob"),
    "ema_decay": ("ema", "decay"),
}


def as_options(value: Any, cls: type, group: str) -> Any:
    """An option group from a dataclass (Python, LightningCLI), a dict (checkpoints) or None (defaults)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"`{group}` has no field(s) {unknown}; known: {sorted(known)}")
        return cls(**value)
    raise TypeError(f"`{group}` must be a {cls.__name__} or a dict, not {type(value).__name__}")


def grouped_hyper_parameters(hparams: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A checkpoint's hyper-parameters as plain dicts per option group, with `overrides` applied.

    Also reads checkpoints written before the option groups (flat `ema_decay`, `learning_rate`, ...).
    An override of a group is a dict of its fields (merged) or an options dataclass (replaces it).
    LightningCLI's private keys (`_class_path`, `_instantiator`) are dropped.
    """
    grouped: dict[str, Any] = {group: {} for group in OPTION_GROUPS}
    grouped.update(TOP_LEVEL_DEFAULTS)
    for key, value in hparams.items():
        if key.startswith("_"):
            continue
        if key in OPTION_GROUPS:
            grouped[key].update(asdict(value) if not isinstance(value, dict) else value)
        elif key in TOP_LEVEL_DEFAULTS:
            grouped[key] = value
        elif key in _FLAT_FIELDS:
            group, name = _FLAT_FIELDS[key]
            grouped[group][name] = value
        else:
            raise ValueError(f"hyper-parameter {key!r} is not one of CXRDiffusion's; was the checkpoint written by it?")
    for key, value in (overrides or {}).items():
        if key in OPTION_GROUPS:
            grouped[key] = asdict(value) if not isinstance(value, dict) else {**grouped[key], **value}
        elif key in TOP_LEVEL_DEFAULTS:
            grouped[key] = value
        else:
            known = sorted([*OPTION_GROUPS, *TOP_LEVEL_DEFAULTS])
            raise ValueError(f"override {key!r} is not a CXRDiffusion hyper-parameter; known: {known}")
    for group, cls in OPTION_GROUPS.items():
        grouped[group] = asdict(as_options(grouped[group], cls, group))
    return grouped
