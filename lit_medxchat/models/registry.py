"""The models a checkpoint may name, and the plain `nn.Module` core each one is loaded as.

A checkpoint says which LightningModule wrote it (`module_class`, or LightningCLI's `_class_path`).
Inference (`chat`, `export`, the web chat, the metric callbacks' judges) never imports a class on a
checkpoint's say-so: the name is looked up here, and only these cores are ever built. Loading a core
needs neither Lightning nor the training wrapper: each core class has

- `from_checkpoint(checkpoint: dict, map_location="cpu", **overrides)`: the core in eval mode, built
  from the checkpoint's hyper-parameters (plain types) with its trained weights loaded strictly;
- `export_pretrained(out_dir, ...) -> list[Path]`: the libraries' own formats.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from lit_medxchat.core.checkpoint_files import load_checkpoint_file

# LightningModule class name -> "module:core class". The only classes a checkpoint can make us build.
MODEL_CORES: dict[str, str] = {
    "MedXChatLoRA": "lit_medxchat.models.medxchat:MedXChatModel",
    "CXRDiffusion": "lit_medxchat.models.text_to_cxr:TextToCXR",
    "ViewClassifier": "lit_medxchat.models.image_classifier:ImageClassifierCore",
    "FindingsClassifier": "lit_medxchat.models.image_classifier:ImageClassifierCore",
}


class UnknownModelError(ValueError):
    """The checkpoint names a class that is not one of ours (it is never imported)."""


def checkpoint_model_name(checkpoint: dict[str, Any], source: str | Path = "checkpoint") -> str:
    """Which of our models wrote `checkpoint`: its `module_class`, else LightningCLI's `_class_path`."""
    hparams = checkpoint.get("hyper_parameters") or {}
    for qualified in (checkpoint.get("module_class"), hparams.get("_class_path")):
        if qualified:
            name = str(qualified).rsplit(".", 1)[-1]
            if name in MODEL_CORES:
                return name
            raise UnknownModelError(
                f"{source} was written by {qualified!r}, which is not a lit-medxchat model "
                f"(one of {sorted(MODEL_CORES)}); it is not loaded"
            )
    raise UnknownModelError(
        f"{source} does not say which model wrote it (no `module_class` nor `_class_path`): "
        f"it was not written by one of {sorted(MODEL_CORES)}"
    )


def core_class(name: str) -> type:
    """The core class for a model name from `MODEL_CORES` (imported lazily: the LLM stack only when needed)."""
    if name not in MODEL_CORES:
        raise UnknownModelError(f"{name!r} is not a lit-medxchat model; known: {sorted(MODEL_CORES)}")
    module_name, attribute = MODEL_CORES[name].split(":")
    return getattr(importlib.import_module(module_name), attribute)


def load_core(path: str | Path, map_location: Any = "cpu", **overrides: Any) -> Any:
    """The plain core of the model that wrote the checkpoint file at `path`, in eval mode."""
    checkpoint = load_checkpoint_file(path)
    name = checkpoint_model_name(checkpoint, path)
    return core_class(name).from_checkpoint(checkpoint, map_location=map_location, **overrides)
