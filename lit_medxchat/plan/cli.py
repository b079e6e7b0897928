"""`lit-medxchat plan --config CFG [LightningCLI overrides] [--gpu-memory 80GB --mfu 0.35 ...]`.

Exit status: 0 the run fits; 1 the config or model is wrong (the message names the field); 3 the run does
not fit the GPU memory.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import re
import sys
import warnings
from pathlib import Path

from lit_medxchat.plan.memory import GIB


def parse_bytes(value: str) -> int:
    """'80GB', '80GiB', '40g', '512MB' -> bytes. GPU memory is sold in binary units, so GB means GiB here."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)(i?b)?\s*", value.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{value!r} is not a size like 80GB or 40GiB")
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[match.group(2)]
    return int(float(match.group(1)) * scale)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lit-medxchat plan",
        description="Build a config's model on the meta device (no download, no memory) and print what a run "
        "needs per GPU. Other options (--config, --trainer.devices, --trainer.num_nodes, --trainer.strategy, "
        "--model.init_args..., --data.init_args...) are read as `lit-medxchat fit` reads them.",
    )
    parser.add_argument("--gpu-memory", type=parse_bytes, default=80 * GIB, help="memory of one GPU (default 80GB)")
    parser.add_argument("--gpu-tflops", type=float, default=312.0,
                        help="peak dense TFLOP/s of one GPU at the run's precision (default 312: A100 bf16)")
    parser.add_argument("--mfu", type=float, default=0.35, help="assumed model FLOPs utilisation (default 0.35)")
    parser.add_argument("--train-samples", type=int, default=270_790,
                        help="training samples per epoch (default 270,790: MIMIC-CXR's training pairs)")
    parser.add_argument("--reserve-memory", type=parse_bytes, default=2 * GIB,
                        help="assumed CUDA context + allocator slack per GPU (default 2GB)")
    parser.add_argument("--images-per-sample", type=int, default=1, help="images per training sample (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    return parser


def _int_setting(value, field_name: str, default: int) -> int:
    if value is None or value == "auto":
        return default
    if isinstance(value, list):
        return len(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field_name}={value!r} is not a number of devices") from None


@contextlib.contextmanager
def _quiet():
    """Library chatter (seed messages, dtype and deprecation warnings) is not part of the plan."""
    from lit_medxchat.core.quiet import loggers_at_level

    libraries = ("lightning.pytorch", "lightning.fabric", "lightning", "deepspeed", "transformers", "diffusers")
    with warnings.catch_warnings(), loggers_at_level(logging.ERROR, *libraries):
        warnings.simplefilter("ignore")
        with contextlib.redirect_stderr(io.StringIO()) as captured, contextlib.redirect_stdout(captured):
            yield captured


def make_plan(rest: list[str], options: argparse.Namespace):
    """Build the model from `rest` (fit's arguments) and compute its RunPlan."""
    import torch

    from lit_medxchat.plan.build import build_planned
    from lit_medxchat.plan.memory import LOW_PRECISIONS, model_state_bytes, strategy_plan
    from lit_medxchat.plan.params import count_parameters
    from lit_medxchat.plan.probe import StepShapes, gradient_checkpointing_enabled, probe_model
    from lit_medxchat.plan.report import Assumptions, RunPlan

    planned = build_planned(rest)
    trainer = planned.trainer
    devices = _int_setting(trainer.get("devices"), "trainer.devices", 1)
    num_nodes = _int_setting(trainer.get("num_nodes"), "trainer.num_nodes", 1)
    precision = str(trainer.get("precision") or "32-true")
    strategy = strategy_plan(trainer.get("strategy"), devices * num_nodes)
    counts = count_parameters(planned.model)
    if counts.trainable == 0:
        raise ValueError(f"{planned.model_class} has no trainable parameter: check which parts it freezes")
    memory = model_state_bytes(counts, strategy, precision, devices, num_nodes, planned.partitioned_parts)
    data = planned.data
    batch_size = int(data.get("batch_size") or 1)
    shapes = StepShapes(batch_size, data.get("max_length"), data.get("image_size") or data.get("resolution"),
                        options.images_per_sample)
    low = precision in LOW_PRECISIONS
    compute = (torch.float16 if precision.startswith("16") else torch.bfloat16) if low else None
    try:
        probe = probe_model(planned.model, shapes, compute)
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        raise ValueError(f"a training step of {planned.model_class} fails at the configured shapes "
                         f"(data batch_size={batch_size}, max_length={shapes.seq_len}, "
                         f"image size={shapes.image_size}): {error}") from error
    notes = list(planned.notes)
    if probe is None:
        notes.append(f"no activation probe for {planned.model_class}: activations and FLOPs not counted")
    if trainer.get("devices") in (None, "auto"):
        notes.append("trainer.devices is auto: planned for 1 GPU per node")
    return RunPlan(
        config=next((rest[i + 1] for i, a in enumerate(rest[:-1]) if a in ("--config", "-c")), "?"),
        model_class=planned.model_class,
        devices=devices,
        num_nodes=num_nodes,
        precision=precision,
        strategy=strategy.source or strategy.kind,
        batch_size=batch_size,
        accumulate=int(trainer.get("accumulate_grad_batches") or 1),
        max_epochs=trainer.get("max_epochs") if (trainer.get("max_epochs") or 0) > 0 else None,
        counts=counts,
        memory=memory,
        probe=probe,
        assumptions=Assumptions(options.gpu_memory, options.gpu_tflops, options.mfu, options.train_samples,
                                options.reserve_memory, options.images_per_sample),
        notes=notes,
        gradient_checkpointing=gradient_checkpointing_enabled(planned.model),
    )


def main(argv: list[str] | None = None) -> int:
    from lit_medxchat.plan.build import PlanError
    from lit_medxchat.plan.report import format_plan

    options, rest = _parser().parse_known_args(list(sys.argv[1:] if argv is None else argv))
    if not any(a in ("--config", "-c") or a.startswith("--config=") for a in rest):
        print("lit-medxchat plan: error: give --config (a shipped name such as paper/chat, or a YAML file)",
              file=sys.stderr)
        return 2
    try:
        with _quiet() as captured:
            plan = make_plan(rest, options)
    except (PlanError, ValueError) as error:
        print(f"lit-medxchat plan: error: {error}", file=sys.stderr)
        return 1
    except SystemExit as error:  # the config parser's own usage errors
        print(f"lit-medxchat plan: error: the config does not parse\n{captured.getvalue().strip()}",
              file=sys.stderr)
        return int(error.code or 1)
    print(format_plan(plan))
    if options.json is not None:
        options.json.write_text(json.dumps(plan.summary(), indent=1) + "\n")
    if not plan.fits:
        peak = plan.peak_bytes(plan.gradient_checkpointing)
        print(f"lit-medxchat plan: error: peak {peak / GIB:.1f} GiB per GPU exceeds --gpu-memory "
              f"{plan.assumptions.gpu_memory / GIB:.0f} GiB: raise the device count, shard with ZeRO, turn on gradient "
              "checkpointing or lower data.init_args.batch_size", file=sys.stderr)
        return 3
    return 0
