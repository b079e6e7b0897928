"""Bytes per GPU of a run: weights, gradients, optimizer states, buffers, activations, for a strategy.

The model states follow what each strategy allocates for AdamW:
- single device / DDP: parameters as built (frozen bf16, trainable fp32 under `*-mixed`; everything in the
  low dtype under `*-true`), one gradient and two Adam moments (exp_avg, exp_avg_sq) per trainable element in
  the parameter's dtype plus a 4-byte `step` per trainable tensor; DDP adds reducer buckets the size of the
  gradients.
- DeepSpeed ZeRO (bf16/fp16): the engine casts every parameter to 16 bits; trainable elements carry a 16-bit
  gradient and, in the optimizer, an fp32 master copy, fp32 gradient and two fp32 moments (16 bytes). Stage 1
  shards the optimizer, stage 2 also the gradients, stage 3 also every parameter (frozen ones too) plus the
  largest layer gathered (16-bit weights and gradients); `offload_optimizer` / `offload_param` move those to
  CPU RAM; gradient buckets are `reduce_bucket_size` 16-bit elements (two with `overlap_comm` in stage 1-2).
This is DeepSpeed's own accounting (`estimate_zero2/3_model_states_mem_needs`), applied to the trainable
parameters only; the frozen ones need no gradient or optimizer state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lit_medxchat.plan.params import ParamCounts

GIB = 2**30
LOW_PRECISIONS = {"bf16-mixed", "bf16-true", "bf16", "16-mixed", "16-true", "16"}


@dataclass
class StrategyPlan:
    """What the plan needs to know of `trainer.strategy` (and its DeepSpeed JSON)."""

    kind: str  # "single", "ddp" or "deepspeed"
    stage: int = 0
    offload_optimizer: bool = False
    offload_param: bool = False
    reduce_bucket_size: int = 0
    overlap_comm: bool = False
    source: str = ""


def _strategy_error(value: Any) -> ValueError:
    return ValueError(
        f"trainer.strategy={value!r} is not one the plan models: use auto, ddp, deepspeed_stage_1/2/3[_offload] "
        "or a DeepSpeedStrategy with init_args.config (e.g. cluster/deepspeed/zero2.json)"
    )


BUILD_RAM = "model build (all ranks)"


def _deepspeed_json(config: Any) -> dict[str, Any]:
    from lit_medxchat.training.strategies import CLUSTER_DEEPSPEED_DIR, load_deepspeed_config

    if isinstance(config, str | Path) and not Path(config).exists():
        in_repo = CLUSTER_DEEPSPEED_DIR.parent.parent / str(config)
        if in_repo.exists():
            config = in_repo
    try:
        return load_deepspeed_config(config)
    except (FileNotFoundError, json.JSONDecodeError) as error:
        raise ValueError(f"trainer.strategy.init_args.config: {error}") from error


def strategy_plan(strategy: Any, world_size: int) -> StrategyPlan:
    """`trainer.strategy` (a name or a `{class_path, init_args}` dict) -> StrategyPlan."""
    if strategy in (None, "auto"):
        return StrategyPlan("ddp" if world_size > 1 else "single", source=str(strategy))
    if isinstance(strategy, str):
        if strategy.startswith("ddp"):
            return StrategyPlan("ddp", source=strategy)
        if strategy in ("single_device",):
            return StrategyPlan("single", source=strategy)
        if strategy.startswith("deepspeed"):
            parts = strategy.split("_")
            stage = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 2
            offload = strategy.endswith("offload")
            return StrategyPlan("deepspeed", stage, offload, offload and stage == 3, int(5e8), True, strategy)
        raise _strategy_error(strategy)
    if isinstance(strategy, dict) and "class_path" in strategy:
        name = strategy["class_path"].rsplit(".", 1)[-1]
        init = strategy.get("init_args") or {}
        if "DDP" in name:
            return StrategyPlan("ddp", source=name)
        if "DeepSpeed" in name or name == "ZeroStrategy":  # ours is a DeepSpeedStrategy
            zero = dict(_deepspeed_json(init["config"]).get("zero_optimization", {})) if init.get("config") else {}
            stage = int(zero.get("stage", init.get("stage", 2)))
            off_opt = (zero.get("offload_optimizer") or {}).get("device", "none") != "none" or bool(
                init.get("offload_optimizer")
            )
            off_par = (zero.get("offload_param") or {}).get("device", "none") != "none" or bool(
                init.get("offload_parameters")
            )
            bucket = int(float(zero.get("reduce_bucket_size", init.get("reduce_bucket_size", 2e8))))
            overlap = bool(zero.get("overlap_comm", True))
            source = f"{name} ({init.get('config') or 'stage ' + str(stage)})"
            return StrategyPlan("deepspeed", stage, off_opt, off_par, bucket, overlap, source)
    raise _strategy_error(strategy)


@dataclass
class MemoryPlan:
    """Bytes per GPU (and per node in CPU RAM for offload), one line per kind of allocation."""

    gpu: dict[str, int] = field(default_factory=dict)
    cpu_per_node: dict[str, int] = field(default_factory=dict)
    deepspeed_estimate: dict[str, int] | None = None
    ours_for_estimate: int | None = None

    @property
    def model_states(self) -> int:
        return sum(self.gpu.values())


def model_state_bytes(
    counts: ParamCounts,
    strategy: StrategyPlan,
    precision: str,
    devices: int,
    num_nodes: int,
    partitioned_parts: frozenset[str] = frozenset(),
) -> MemoryPlan:
    """Per-GPU model-state bytes (weights, gradients, optimizer, buffers) for `strategy` and `precision`.

    `partitioned_parts`: top-level parts whose frozen weights the model loads straight into ZeRO-3 partitions
    (`parts_loaded_partitioned()` of the chat model); under ZeRO-3 a rank's host RAM holds only its share of them.
    """
    world = devices * num_nodes
    low = str(precision) in LOW_PRECISIONS
    true_low = low and str(precision).endswith("true") or str(precision) in ("bf16", "16")
    plan = MemoryPlan()
    trainable, frozen = counts.trainable, counts.frozen
    plan.cpu_per_node[BUILD_RAM] = _build_bytes_per_rank(counts, strategy, world, partitioned_parts) * devices
    if strategy.kind in ("single", "ddp"):
        t_bytes = 2 * trainable if true_low else counts.trainable_bytes
        plan.gpu["frozen weights"] = 2 * frozen if true_low else counts.frozen_bytes
        plan.gpu["trainable weights"] = t_bytes
        plan.gpu["gradients"] = t_bytes
        plan.gpu["optimizer states (AdamW m, v)"] = 2 * t_bytes + 4 * counts.trainable_tensors
        if strategy.kind == "ddp":
            plan.gpu["DDP gradient buckets"] = t_bytes
        return plan
    if not low:
        raise ValueError(
            f"trainer.precision={precision!r} with DeepSpeed: the plan models ZeRO with bf16/fp16 "
            "(precision bf16-mixed), as the shipped ZeRO configs are used"
        )
    stage = strategy.stage
    param_shards = world if stage >= 3 else 1
    frozen_bytes = 2 * frozen // param_shards
    trainable_bytes = 2 * trainable // param_shards
    if strategy.offload_param and stage >= 3:
        plan.cpu_per_node["parameters (offloaded)"] = (frozen_bytes + trainable_bytes) * devices
        frozen_bytes = trainable_bytes = 0
    plan.gpu["frozen weights"] = frozen_bytes
    plan.gpu["trainable weights"] = trainable_bytes
    plan.gpu["gradients (16-bit)"] = 2 * trainable // (world if stage >= 2 else 1)
    shards = world if stage >= 1 else 1
    optimizer, fp32_grads = 12 * trainable // shards, 4 * trainable // shards
    if strategy.offload_optimizer:
        plan.cpu_per_node["optimizer: fp32 master, m, v, grads (offloaded)"] = (optimizer + fp32_grads) * devices
        optimizer = fp32_grads = 0
    plan.gpu["optimizer: fp32 master + AdamW m, v"] = optimizer
    plan.gpu["fp32 gradient partition (at the step)"] = fp32_grads
    if stage >= 3:
        plan.gpu["largest layer gathered (ZeRO-3)"] = 4 * counts.largest_layer
    if stage in (1, 2):
        plan.gpu["gradient buckets"] = 2 * strategy.reduce_bucket_size * (2 if strategy.overlap_comm else 1)
    else:
        plan.gpu["gradient buckets"] = 2 * strategy.reduce_bucket_size
    plan.deepspeed_estimate, plan.ours_for_estimate = _deepspeed_estimate(counts, strategy, devices, num_nodes, plan)
    return plan


def _deepspeed_estimate(
    counts: ParamCounts, strategy: StrategyPlan, devices: int, num_nodes: int, plan: MemoryPlan
) -> tuple[dict[str, int] | None, int | None]:
    """DeepSpeed's estimator for the trainable parameters, and our figure for the same allocations."""
    try:
        if strategy.stage >= 3:
            from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
        else:
            from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
    except ImportError:
        return None, None
    trainable, world = counts.trainable, devices * num_nodes
    if strategy.stage >= 3:
        largest = counts.largest_layer
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            trainable, largest, devices, num_nodes, strategy.offload_optimizer, strategy.offload_param
        )
        ours = plan.gpu["largest layer gathered (ZeRO-3)"] + (0 if strategy.offload_param else 2 * trainable // world)
    else:
        cpu, gpu = estimate_zero2_model_states_mem_needs(trainable, devices, num_nodes, strategy.offload_optimizer)
        ours = plan.gpu["trainable weights"]
    ours += plan.gpu["optimizer: fp32 master + AdamW m, v"] + plan.gpu["fp32 gradient partition (at the step)"]
    if strategy.stage == 2 or strategy.stage >= 3:
        ours += 0 if strategy.stage >= 3 else plan.gpu["gradients (16-bit)"]
    return {"gpu": int(gpu), "cpu_per_node": int(cpu)}, int(ours)


def _build_bytes_per_rank(counts: ParamCounts, strategy: StrategyPlan, world: int, partitioned: frozenset[str]) -> int:
    """Host RAM one rank needs to build the model (in its built dtypes) before the strategy moves or shards it.

    Every part is built whole on every rank, except under ZeRO-3 the frozen weights of `partitioned` parts, which
    load into partitions (a rank holds 1/world of them; transformers reads the weight files one at a time).
    """
    shards = world if strategy.kind == "deepspeed" and strategy.stage >= 3 else 1
    total = counts.trainable_bytes
    for part in counts.parts:
        total += part.frozen_bytes // shards if part.name in partitioned else part.frozen_bytes
    return total
