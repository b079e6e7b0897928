"""The plan of a run: every figure computed once into `RunPlan`, printed as text (or written as JSON).

Time and read rate follow from FLOPs: seconds per optimizer step = FLOPs of one GPU's micro-batches /
(peak FLOP/s x MFU); an epoch is ceil(training samples / global batch) steps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from lit_medxchat.plan.memory import BUILD_RAM, GIB, MemoryPlan
from lit_medxchat.plan.params import ParamCounts, index_ranges
from lit_medxchat.plan.probe import ProbeResult


@dataclass
class Assumptions:
    """What the plan cannot read from the config (command-line options)."""

    gpu_memory: int = 80 * GIB
    gpu_tflops: float = 312.0
    mfu: float = 0.35
    train_samples: int = 270_790
    reserve: int = 2 * GIB
    images_per_sample: int = 1


@dataclass
class RunPlan:
    config: str
    model_class: str
    devices: int
    num_nodes: int
    precision: str
    strategy: str
    batch_size: int
    accumulate: int
    max_epochs: int | None
    counts: ParamCounts
    memory: MemoryPlan
    probe: ProbeResult | None
    assumptions: Assumptions
    notes: list[str] = field(default_factory=list)
    gradient_checkpointing: bool = False  # what the config sets: the peak that decides whether the run fits

    # ---- derived figures -------------------------------------------------------------------------
    @property
    def world(self) -> int:
        return self.devices * self.num_nodes

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.accumulate * self.world

    def peak_bytes(self, checkpointing: bool) -> int:
        activations = 0
        if self.probe is not None:
            activations = self.probe.checkpointed_bytes if checkpointing else self.probe.activation_bytes
        return self.memory.model_states + activations + self.assumptions.reserve

    @property
    def fits(self) -> bool:
        return self.peak_bytes(self.gradient_checkpointing) <= self.assumptions.gpu_memory

    @property
    def step_flops_per_gpu(self) -> int | None:
        return None if self.probe is None else self.probe.flops * self.accumulate

    @property
    def seconds_per_step(self) -> float | None:
        flops = self.step_flops_per_gpu
        if flops is None:
            return None
        return flops / (self.assumptions.gpu_tflops * 1e12 * self.assumptions.mfu)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.assumptions.train_samples / self.global_batch)

    def summary(self) -> dict[str, Any]:
        """Every figure as plain numbers (for `--json` and tests)."""
        seconds = self.seconds_per_step
        return {
            "config": self.config,
            "model": self.model_class,
            "world_size": self.world,
            "strategy": self.strategy,
            "precision": self.precision,
            "parameters": {"total": self.counts.total, "trainable": self.counts.trainable,
                           "frozen": self.counts.frozen,
                           "parts": [asdict(p) for p in self.counts.parts]},
            "lora_targets": self.counts.lora_targets,
            "gpu_bytes": dict(self.memory.gpu),
            "cpu_bytes_per_node": dict(self.memory.cpu_per_node),
            "activation_bytes": None if self.probe is None else self.probe.activation_bytes,
            "activation_bytes_checkpointed": None if self.probe is None else self.probe.checkpointed_bytes,
            "reserve_bytes": self.assumptions.reserve,
            "peak_bytes": self.peak_bytes(False),
            "peak_bytes_checkpointed": self.peak_bytes(True),
            "gpu_memory_bytes": self.assumptions.gpu_memory,
            "gradient_checkpointing": self.gradient_checkpointing,
            "fits": self.fits,
            "deepspeed_estimate": self.memory.deepspeed_estimate,
            "ours_for_deepspeed_estimate": self.memory.ours_for_estimate,
            "flops_per_micro_batch": None if self.probe is None else self.probe.flops,
            "flops_per_optimizer_step": None if seconds is None else self.step_flops_per_gpu * self.world,
            "seconds_per_step": seconds,
            "steps_per_epoch": self.steps_per_epoch,
            "hours_per_epoch": None if seconds is None else seconds * self.steps_per_epoch / 3600,
            "images_per_second_per_node": None if seconds is None else self.images_per_second_per_node,
            "checkpoint_bytes_trainable": self.checkpoint_bytes()[0],
            "checkpoint_bytes_full": self.checkpoint_bytes()[1],
            "notes": list(self.notes),
        }

    @property
    def images_per_second_per_node(self) -> float | None:
        seconds = self.seconds_per_step
        if seconds is None:
            return None
        per_node = self.batch_size * self.accumulate * self.devices * self.assumptions.images_per_sample
        return per_node / seconds

    def checkpoint_bytes(self) -> tuple[int, int]:
        """(trainable-only: fp32 weights + AdamW moments, as our checkpoints hold them; full weights as built)."""
        trainable = 4 * self.counts.trainable
        return trainable + 8 * self.counts.trainable, self.counts.frozen_bytes + trainable


def _gib(value: int | float) -> str:
    return f"{value / GIB:9.2f} GiB"


def _count(value: int) -> str:
    return f"{value:>15,} ({value / 1e9:.3f} B)" if value >= 1e8 else f"{value:>15,} ({value / 1e6:.2f} M)"


def format_plan(plan: RunPlan) -> str:
    """The printed plan (fixed-width text)."""
    a, lines = plan.assumptions, []
    lines.append(f"plan: {plan.config}  ({plan.model_class})")
    lines.append(
        f"  {plan.num_nodes} node(s) x {plan.devices} GPU(s) = {plan.world}; strategy {plan.strategy}; "
        f"precision {plan.precision}; micro-batch {plan.batch_size} x accumulate {plan.accumulate} "
        f"-> global batch {plan.global_batch}"
    )
    lines.append("")
    lines.append("parameters                     trainable                     frozen")
    for part in plan.counts.parts:
        lines.append(f"  {part.name:<18} {_count(part.trainable)}  {_count(part.frozen)}")
    lines.append(f"  {'total':<18} {_count(plan.counts.trainable)}  {_count(plan.counts.frozen)}"
                 f"   all: {plan.counts.total:,}")
    if plan.counts.lora_targets:
        found = "; ".join(f"{t} in layers {index_ranges(i)}" for t, i in sorted(plan.counts.lora_targets.items()))
        lines.append(f"  LoRA targets: {found}")
    lines.append("  trainable tensors (pattern: tensors, elements, layers):")
    groups = sorted(plan.counts.trainable_groups.items(), key=lambda kv: -kv[1][1])
    for pattern, (tensors, elements, layers) in groups[:12]:
        lines.append(f"    {pattern:<78} {tensors:>4} {elements:>13,}  {index_ranges(layers)}")
    if len(plan.counts.trainable_groups) > 12:
        lines.append(f"    ... and {len(plan.counts.trainable_groups) - 12} more patterns")
    lines.append("")
    lines.append(f"memory per GPU (strategy {plan.strategy}, {plan.precision})")
    for name, value in plan.memory.gpu.items():
        lines.append(f"  {name:<44} {_gib(value)}")
    if plan.probe is not None:
        lines.append(f"  {'activations (measured saved tensors)':<44} {_gib(plan.probe.activation_bytes)}"
                     f"   with activation checkpointing {_gib(plan.probe.checkpointed_bytes).strip()}")
    else:
        lines.append("  activations                                  not measured (no probe for this model class)")
    lines.append(f"  {'CUDA context + allocator reserve (assumed)':<44} {_gib(a.reserve)}")
    lines.append(f"  {'peak':<44} {_gib(plan.peak_bytes(False))}"
                 f"   with activation checkpointing {_gib(plan.peak_bytes(True)).strip()}")
    state = "on" if plan.gradient_checkpointing else "off"
    lines.append(f"  {'gradient checkpointing in this config':<44} {state:>9}   (llm.gradient_checkpointing, "
                 "base.gradient_checkpointing)")
    headroom = a.gpu_memory - plan.peak_bytes(plan.gradient_checkpointing)
    verdict = "fits" if headroom >= 0 else "DOES NOT FIT"
    lines.append(f"  {'headroom on a ' + f'{a.gpu_memory / GIB:.0f} GiB GPU':<44} {_gib(headroom)}   {verdict}")
    for name, value in plan.memory.cpu_per_node.items():
        lines.append(f"  CPU RAM per node: {name:<26} {_gib(value)}"
                     + (f"   ({_gib(value // max(plan.devices, 1)).strip()} per rank)" if name == BUILD_RAM else ""))
    if plan.memory.deepspeed_estimate is not None:
        ds = plan.memory.deepspeed_estimate
        ratio = plan.memory.ours_for_estimate / ds["gpu"] if ds["gpu"] else float("nan")
        ours = _gib(plan.memory.ours_for_estimate).strip()
        lines.append(f"  DeepSpeed estimator, trainable model states: GPU {_gib(ds['gpu']).strip()}, CPU/node "
                     f"{_gib(ds['cpu_per_node']).strip()}; ours for the same {ours} (ratio {ratio:.2f})")
    lines.append("")
    if plan.seconds_per_step is not None:
        seconds, steps = plan.seconds_per_step, plan.steps_per_epoch
        lines.append("compute")
        lines.append(f"  FLOPs per micro-batch per GPU (fwd + bwd)    {plan.probe.flops:.3e}")
        lines.append(f"  FLOPs per optimizer step (all GPUs)          {plan.step_flops_per_gpu * plan.world:.3e}")
        lines.append(f"  at {a.gpu_tflops:g} TFLOP/s x MFU {a.mfu:g}: {seconds:.2f} s per optimizer step; "
                     f"{steps:,} steps per epoch of {a.train_samples:,} samples = {seconds * steps / 3600:.2f} h"
                     + (f" ({plan.max_epochs} epochs: {seconds * steps * plan.max_epochs / 3600:.1f} h)"
                        if plan.max_epochs else ""))
        lines.append(f"  data read rate: {plan.images_per_second_per_node:,.0f} images/s per node")
    trainable_ckpt, full_ckpt = plan.checkpoint_bytes()
    lines.append(f"checkpoint: trainable-only {_gib(trainable_ckpt).strip()} (fp32 weights + AdamW moments); "
                 f"full weights {_gib(full_ckpt).strip()}")
    for note in plan.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)
