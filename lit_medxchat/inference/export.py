"""`lit-medxchat export --ckpt PATH --out DIR`: a trained checkpoint to its libraries' own formats.

The checkpoint names the module it came from (`module_class`, written by
`TrainableOnlyCheckpoint`), its hyper-parameters rebuild the module (frozen bases from their
`name_or_path` or their config + `init_seed`), the trainable weights are loaded with the strict
key check, and the module's `export_pretrained(out_dir)` writes:

- `MedXChatLoRA`: the LoRA adapter in peft format and a merged transformers model;
- `CXRDiffusion`: the ControlNet copy in diffusers format plus the text-to-hint weights;
- `ViewClassifier` / `FindingsClassifier`: transformers image classifiers.

Reading a checkpoint is one function (`load_lightning_checkpoint`) passed to `export_checkpoint`,
so a loader for sharded (DeepSpeed ZeRO) checkpoint folders can be swapped in.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# Class name -> "module:attribute". Only these are ever imported from a checkpoint's say-so.
MODULE_CLASSES: dict[str, str] = {
    "ViewClassifier": "lit_medxchat.models.classifiers:ViewClassifier",
    "FindingsClassifier": "lit_medxchat.models.classifiers:FindingsClassifier",
    "CXRDiffusion": "lit_medxchat.models.diffusion:CXRDiffusion",
    "MedXChatLoRA": "lit_medxchat.models.llm_lora:MedXChatLoRA",
}

CheckpointLoader = Callable[[Path], dict[str, Any]]


def load_lightning_checkpoint(path: Path) -> dict[str, Any]:
    """Read a single-file Lightning checkpoint (trainable weights + hyper-parameters) on the CPU."""
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a folder (a DeepSpeed ZeRO sharded checkpoint?); export reads single-file checkpoints: "
            "convert it with `lightning.pytorch.utilities.deepspeed.convert_zero_checkpoint_to_fp32_state_dict` first"
        )
    if not path.is_file():
        raise FileNotFoundError(f"--ckpt {path}: no such file")
    # weights_only=False: hyper-parameters may hold option dataclasses. Only export checkpoints you trust.
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("state_dict", "hyper_parameters"):
        if key not in checkpoint:
            raise ValueError(f"--ckpt {path}: not a Lightning checkpoint of this project (no {key!r})")
    return checkpoint


def module_class_name(checkpoint: dict[str, Any]) -> str:
    """Which LightningModule wrote `checkpoint`: its `module_class`, else LightningCLI's `_class_path`."""
    hparams = checkpoint.get("hyper_parameters", {})
    for qualified in (checkpoint.get("module_class"), hparams.get("_class_path")):
        if qualified:
            name = str(qualified).rsplit(".", 1)[-1]
            if name in MODULE_CLASSES:
                return name
            raise ValueError(f"checkpoint was written by {qualified!r}; export knows {sorted(MODULE_CLASSES)}")
    raise ValueError(
        "checkpoint does not say which module wrote it (no `module_class` nor `_class_path`): "
        f"it was not written by one of {sorted(MODULE_CLASSES)}"
    )


def resolve_module_class(name: str) -> type:
    """Import the class lazily (the LLM stack is only imported when exporting an LLM checkpoint)."""
    module_name, attribute = MODULE_CLASSES[name].split(":")
    return getattr(importlib.import_module(module_name), attribute)


def rebuild_module(checkpoint: dict[str, Any]):
    """Rebuild the module from the checkpoint's hyper-parameters and load its trainable weights."""
    cls = resolve_module_class(module_class_name(checkpoint))
    # LightningCLI stores `_class_path` / `_instantiator` beside the __init__ arguments.
    hparams = {key: value for key, value in checkpoint["hyper_parameters"].items() if not key.startswith("_")}
    module = cls(**hparams)
    module.on_load_checkpoint(checkpoint)  # same order as Lightning: hooks (e.g. EMA) before weights
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()


def export_checkpoint(
    ckpt: str | Path,
    out_dir: str | Path,
    include_base: bool = False,
    load_state: CheckpointLoader = load_lightning_checkpoint,
) -> list[Path]:
    """Export `ckpt` into `out_dir`; returns what `export_pretrained` wrote."""
    checkpoint = load_state(Path(ckpt))
    module = rebuild_module(checkpoint)
    kwargs = {}
    if "include_base" in inspect.signature(module.export_pretrained).parameters:
        kwargs["include_base"] = include_base
    elif include_base:
        raise ValueError(f"--include-base applies to CXRDiffusion checkpoints, not {type(module).__name__}")
    with torch.no_grad():
        return list(module.export_pretrained(Path(out_dir), **kwargs))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lit-medxchat export",
        description="Export a trained checkpoint: LoRA -> peft + merged transformers model, CXR-SD -> diffusers "
        "ControlNet + text-to-hint, classifiers -> transformers.",
    )
    parser.add_argument("--ckpt", required=True, type=Path, help="Lightning checkpoint file (RUN/checkpoints/*.ckpt)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created)")
    parser.add_argument(
        "--include-base",
        action="store_true",
        help="CXR-SD only: also write the frozen vae/unet/text_encoder (needed when they were built from configs)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    written = export_checkpoint(args.ckpt, args.out, include_base=args.include_base)
    print(f"exported {args.ckpt} -> {args.out} ({len(written)} paths)")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
