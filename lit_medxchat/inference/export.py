"""`lit-medxchat export --ckpt PATH --out DIR`: a trained checkpoint to its libraries' own formats.

The checkpoint names the model it came from (`module_class`, written by `TrainableOnlyCheckpoint`,
or LightningCLI's `_class_path`); `lit_medxchat.models.registry` maps that name to the model's plain
core, which is rebuilt from the hyper-parameters (frozen bases from their `name_or_path` or their
config + `init_seed`), gets the trainable weights with the strict key check, and writes with its
`export_pretrained(out_dir)`:

- `MedXChatLoRA`: the LoRA adapter in peft format and a merged transformers model;
- `CXRDiffusion`: the ControlNet copy in diffusers format plus the text-to-hint weights;
- `ViewClassifier` / `FindingsClassifier`: transformers image classifiers.

No Lightning is imported, and the file is read with `weights_only=True`: a checkpoint that pickles
objects, or names a class that is not ours, is refused. Reading a checkpoint is one function
(`load_lightning_checkpoint`) passed to `export_checkpoint`, so a loader for sharded (DeepSpeed
ZeRO) checkpoint folders can be swapped in.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lit_medxchat.core.checkpoint_files import load_checkpoint_file
from lit_medxchat.models.registry import checkpoint_model_name, core_class

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
    checkpoint = load_checkpoint_file(path, map_location="cpu")
    for key in ("state_dict", "hyper_parameters"):
        if key not in checkpoint:
            raise ValueError(f"--ckpt {path}: not a Lightning checkpoint of this project (no {key!r})")
    return checkpoint


def rebuild_core(checkpoint: dict[str, Any], source: str | Path = "checkpoint") -> tuple[str, Any]:
    """The model name the checkpoint gives and its core, rebuilt with the trainable weights (eval mode)."""
    name = checkpoint_model_name(checkpoint, source)
    return name, core_class(name).from_checkpoint(checkpoint, map_location="cpu")


def export_checkpoint(
    ckpt: str | Path,
    out_dir: str | Path,
    include_base: bool = False,
    load_state: CheckpointLoader = load_lightning_checkpoint,
) -> list[Path]:
    """Export `ckpt` into `out_dir`; returns what `export_pretrained` wrote."""
    checkpoint = load_state(Path(ckpt))
    name, core = rebuild_core(checkpoint, ckpt)
    kwargs = {}
    if "include_base" in inspect.signature(core.export_pretrained).parameters:
        kwargs["include_base"] = include_base
    elif include_base:
        raise ValueError(f"--include-base applies to CXRDiffusion checkpoints, not {name}")
    with torch.no_grad():
        return list(core.export_pretrained(Path(out_dir), **kwargs))


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
