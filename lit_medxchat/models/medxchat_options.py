"""The option groups of the MedXChat chat model, free of Lightning.

They are the typed `__init__` arguments of `MedXChatLoRA` (LightningCLI turns their docstrings into
`--model.llm.*`, `--model.lora.*`, ... help) and of the plain core `MedXChatModel`. Checkpoints store
them as plain dicts (`dataclasses.asdict`), so `torch.load(weights_only=True)` reads them back;
`as_options` turns either form into the dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from lit_medxchat.models.visual_adapter import AdapterOptions, VisionOptions

__all__ = [
    "AdapterOptions",
    "GenerationOptions",
    "LLMOptions",
    "LoRAOptions",
    "OptimOptions",
    "VisionOptions",
    "as_options",
    "core_options",
    "tiny_options",
]

Options = TypeVar("Options")


@dataclass
class LLMOptions:
    """The causal language model (frozen).

    Attributes:
        name_or_path: hub id or local folder of a causal LM (paper: a 7B LLaMA-class model). Wins over `config`.
        config: overrides for a randomly initialised LLM when `name_or_path` is None; `model_type`
            picks the architecture (default `llama`), e.g. `{"hidden_size": 64, "num_hidden_layers": 2}`.
            `vocab_size` always follows the tokenizer.
        frozen_dtype: dtype of the frozen LLM and tower (`float32`, `bfloat16`, `float16`); trainable
            weights stay float32.
        attn_implementation: transformers attention backend (`sdpa`, `eager`, `flash_attention_2`).
        gradient_checkpointing: keep only each decoder layer's input in training and recompute the layer in the
            backward pass: activation memory of a 7B base drops from every layer's to about one layer's, for one
            more forward per step (~30% more compute). Answers and gradients are unchanged.
    """

    name_or_path: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    frozen_dtype: str = "float32"
    attn_implementation: str | None = None
    gradient_checkpointing: bool = False


@dataclass
class LoRAOptions:
    """LoRA on the LLM (paper release: q_proj/v_proj, r=16, alpha=16, dropout 0.1).

    Attributes:
        r: rank of the update.
        alpha: scaling numerator (the update is scaled by alpha / r).
        dropout: dropout on the LoRA branch input.
        target_modules: module-name suffixes that get LoRA; each must match at least one Linear.
    """

    r: int = 16
    alpha: int = 16
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class GenerationOptions:
    """Decoding in validation, test and chat (paper release: 3 beams, no sampling).

    Attributes:
        max_new_tokens: answer length limit in tokens.
        num_beams: beam width (1 = greedy).
        do_sample: sample instead of searching.
        temperature: sampling temperature (only with `do_sample`).
        repetition_penalty: >1 discourages repeats (of generated tokens only: the prompt enters as embeddings).
        length_penalty: beam-search length exponent.
        image_contrast: weight `a` of image-contrastive greedy decoding (`lit_medxchat.models.contrastive_decoding`):
            tokens are scored by what the image adds over a blank image; 0 = the decoding above. Needs
            `num_beams: 1`, no sampling, and applies to prompts with images only.
    """

    max_new_tokens: int = 256
    num_beams: int = 3
    do_sample: bool = False
    temperature: float = 1.0
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    image_contrast: float = 0.0


@dataclass
class OptimOptions:
    """AdamW over the trainable weights (paper release: lr 2e-5, StepLR gamma 0.85 per epoch).

    Attributes:
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up, in optimiser steps.
        epoch_gamma: learning-rate factor applied after every epoch (1.0 = constant).
    """

    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    epoch_gamma: float = 1.0


def as_options(value: Options | dict[str, Any] | None, cls: type[Options]) -> Options:
    """An option group from a dataclass (Python, LightningCLI), a dict (checkpoint hparams) or None (defaults)."""
    if value is None:
        return cls()
    if isinstance(value, dict):
        return cls(**value)
    return value


def tiny_options(num_image_tokens: int = 4) -> dict[str, Any]:
    """Option groups of a seconds-fast random-weight chat model (tests, smoke runs on a CPU).

    `MedXChatLoRA(tokenizer_dir, **tiny_options())`: CLIP vision 64 px / patch 16 (16 patches),
    a 1-layer adapter, a 2-layer LLaMA of width 64, LoRA r=4 on q/v, greedy decoding. The plain core
    takes the same groups but `optim` (`MedXChatModel(tokenizer_dir, **core_options(tiny_options()))`).
    """
    return {
        "vision": VisionOptions(
            config={
                "image_size": 64,
                "patch_size": 16,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
            }
        ),
        "adapter": AdapterOptions(num_image_tokens=num_image_tokens, hidden_size=32, num_layers=1, num_heads=2),
        "llm": LLMOptions(
            config={
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "max_position_embeddings": 512,
                "initializer_range": 0.2,  # frozen random LM head: larger logits leave LoRA room to fit
            }
        ),
        "lora": LoRAOptions(r=4, alpha=8, dropout=0.0),
        "generation": GenerationOptions(max_new_tokens=8, num_beams=1),
        "optim": OptimOptions(lr=1e-2),
    }


# Hyper-parameters that only the training wrapper reads (the core ignores them when built from a checkpoint).
TRAINING_ONLY_OPTIONS = ("optim",)


def core_options(options: dict[str, Any]) -> dict[str, Any]:
    """`options` without the groups only training reads (`optim`): the arguments of the plain core."""
    return {key: value for key, value in options.items() if key not in TRAINING_ONLY_OPTIONS}
