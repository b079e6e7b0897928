"""DeepSpeed ZeRO for our models on GPUs and on CPU processes, with the batch size taken from the DataModule.

Lightning's `DeepSpeedStrategy` has two gaps for this project:

- it fills DeepSpeed's `train_micro_batch_size_per_gpu` from `train_dataloader.batch_sampler.batch_size`, and
  our loaders yield ready batches (no batch sampler): set-up stops with an `AttributeError` on every model.
  `ZeroStrategy` reads the DataModule's `batch_size` instead, and refuses a JSON whose micro batch (or
  `train_batch_size`) contradicts it, naming both values;
- it refuses any accelerator but CUDA. Our CI and laptops have no GPU, yet what breaks on clusters (sharded
  checkpoints, resume, partitioned parameters under ZeRO-3, collectives that ranks must join in step) is all
  exercised by ZeRO on CPU processes talking over gloo. On a CPU accelerator `ZeroStrategy` sets up like DDP
  and starts DeepSpeed's process group on gloo; on CUDA it runs Lightning's code path untouched;
- under ZeRO-3 it wraps `configure_model` in DeepSpeed's global `zero.Init`, which partitions every module as it
  is constructed: peft's LoRA initialisation and build steps that read a weight then run on empty tensors.
  `ZeroStrategy` opens `zero3_build` instead: models partition their frozen bases as those load
  (`lit_medxchat.models.zero3_build`) and the engine partitions the rest.

DeepSpeed JIT-compiles a CPU communication op the first time it runs (about 30 s); point
`TORCH_EXTENSIONS_DIR` at a persistent folder to pay that once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

# Shipped ZeRO configs (repository checkout only: `cluster/` is not installed).
CLUSTER_DEEPSPEED_DIR = Path(__file__).resolve().parents[2] / "cluster" / "deepspeed"


class ConfigConflictError(ValueError):
    """The DeepSpeed JSON says one batch size and the DataModule another."""


class ZeroStrategy(DeepSpeedStrategy):
    """`DeepSpeedStrategy` for CUDA or CPU (gloo) processes; the micro batch comes from the DataModule.

    Same arguments as `lightning.pytorch.strategies.DeepSpeedStrategy` (`stage`, `config`, offload options,
    ...). `config` may also be a shipped name (`zero2`, `zero3`, `zero3_offload`). `exclude_frozen_parameters`
    defaults to True here (the stock default is False): checkpoints must never carry a frozen base model.
    Precision on CPU: `32-true` or `bf16-mixed` (fp16 has no CPU kernels).
    """

    strategy_name = "deepspeed_zero"

    def __init__(
        self,
        *args: Any,
        config: str | Path | dict[str, Any] | None = None,
        exclude_frozen_parameters: bool = True,
        **kwargs: Any,
    ) -> None:
        loaded = load_deepspeed_config(config) if config is not None else None
        super().__init__(*args, config=loaded, exclude_frozen_parameters=exclude_frozen_parameters, **kwargs)

    @property
    def _on_cuda(self) -> bool:
        return isinstance(self.accelerator, CUDAAccelerator)

    def setup_environment(self) -> None:
        """On CPU skip the stock CUDA-only check; DDP's set-up (device, then `setup_distributed`) is all we need.

        First, a stale JIT-build lock of DeepSpeed's ops (left by a killed job) is removed: with it every rank
        would wait for ever for a build that no process is running (`extension_locks`)."""
        from lit_medxchat.training.extension_locks import remove_stale_locks

        if self.local_rank == 0:
            remove_stale_locks()
        if self._on_cuda:
            super().setup_environment()
        else:
            DDPStrategy.setup_environment(self)

    @contextlib.contextmanager
    def model_sharded_context(self) -> Iterator[None]:
        """Around `configure_model`: under ZeRO-3 frozen bases built through `build_frozen` load partitioned."""
        from lit_medxchat.models.zero3_build import zero3_build

        self._init_config_if_needed()
        with zero3_build(self.config if self.zero_stage_3 else None):
            yield

    def setup_distributed(self) -> None:
        """On CPU: set ranks and start DeepSpeed's process group on gloo (the stock one validates CUDA indices)."""
        if self._on_cuda:
            super().setup_distributed()
            return
        from lightning.fabric.utilities.seed import reset_seed

        reset_seed()
        self.set_world_ranks()
        self._process_group_backend = self._process_group_backend or "gloo"
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        lr_scheduler: Any = None,
    ) -> tuple[Any, Any]:
        """`deepspeed.initialize` with only trainable parameters (an error naming the model when there are none)."""
        import deepspeed

        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError(
                f"{type(model).__name__} has no trainable parameter: DeepSpeed needs at least one "
                "(check which parts the model freezes)."
            )
        # A CUDA device's index; CPU devices have none, and DeepSpeed then wants the local rank.
        device_rank = self.root_device.index if self._on_cuda else self.local_rank
        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=device_rank),
            config=self.config,
            model=model,
            model_parameters=trainable,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            dist_init_required=False,
        )
        return engine, ds_optimizer

    def backward(self, closure_loss: torch.Tensor, optimizer: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Backward without DeepSpeed's own division by the accumulation steps.

        Lightning's loop already divides every micro-batch's loss by `accumulate_grad_batches`; the engine's
        `backward` would divide again, so with accumulation a ZeRO run got gradients `accumulate` times smaller
        than the same run under DDP (what gradient clipping at 1.0 sees, and what a token-normalised loss must
        not get). Tested: equal gradients under DDP and ZeRO-2 for 2 ranks x 2 micro-batches.
        """
        kwargs.setdefault("scale_wrt_gas", False)
        return super().backward(closure_loss, optimizer, *args, **kwargs)

    def optimizer_step(self, optimizer: Any, closure: Any, model: Any = None, **kwargs: Any) -> Any:
        """The step, then rank 0's buffers of training modules on every rank (as DDP's `broadcast_buffers`).

        DeepSpeed synchronises gradients, not buffers: each rank's batch-norm statistics (the findings classifier's
        ResNet) drift apart, validation then runs a different model on every rank, and the checkpoint keeps only
        rank 0's. Found by the cluster rehearsal (4-rank validation != one process on the same checkpoint).
        """
        output = super().optimizer_step(optimizer, closure, model, **kwargs)
        if self.world_size > 1:
            for buffer in _training_buffers(self.lightning_module):
                torch.distributed.broadcast(buffer.data, src=0)
        return output

    # -- batch size ---------------------------------------------------------------------------------
    def _datamodule_batch_size(self) -> int | None:
        trainer = self.lightning_module.trainer if self.lightning_module is not None else None
        datamodule = getattr(trainer, "datamodule", None)
        batch_size = getattr(datamodule, "batch_size", None)
        return batch_size if isinstance(batch_size, int) and batch_size > 0 else None

    def _auto_select_batch_size(self) -> int:
        """The DataModule's per-rank batch size; a loader's batch sampler only without a DataModule."""
        batch_size = self._datamodule_batch_size()
        if batch_size is not None:
            return batch_size
        source = self.lightning_module.trainer.fit_loop._data_source
        loader = source.dataloader() if source.is_defined() else None
        sampler = getattr(loader, "batch_sampler", None)
        if sampler is None or not isinstance(getattr(sampler, "batch_size", None), int):
            raise ValueError(
                "DeepSpeed needs the per-rank batch size and neither the DataModule (no `batch_size`) nor the "
                "training DataLoader (no batch sampler) says it: add `train_micro_batch_size_per_gpu` to the "
                "DeepSpeed config."
            )
        return sampler.batch_size

    def _format_batch_size_and_grad_accum_config(self) -> None:
        """Lightning's filling of micro batch, accumulation and clipping, after checking the JSON against the
        DataModule: a contradiction would make DeepSpeed's throughput and `train_batch_size` checks lie."""
        if self.lightning_module is not None:
            self._check_batch_sizes()
        super()._format_batch_size_and_grad_accum_config()

    def _check_batch_sizes(self) -> None:
        assert isinstance(self.config, dict)
        batch_size = self._datamodule_batch_size()
        if batch_size is None:
            return
        where = "the DeepSpeed config"
        micro = self.config.get("train_micro_batch_size_per_gpu")
        if micro not in (None, "auto") and int(micro) != batch_size:
            raise ConfigConflictError(
                f"{where} sets train_micro_batch_size_per_gpu={micro} but the DataModule's batch_size is "
                f"{batch_size} (samples per rank per step): remove the key from the JSON (it is filled in from "
                "the DataModule) or make the two equal."
            )
        total = self.config.get("train_batch_size")
        if total not in (None, "auto"):
            trainer = self.lightning_module.trainer
            expected = batch_size * trainer.accumulate_grad_batches * trainer.world_size
            if int(total) != expected:
                raise ConfigConflictError(
                    f"{where} sets train_batch_size={total} but the DataModule's batch_size {batch_size} x "
                    f"accumulate_grad_batches {trainer.accumulate_grad_batches} x {trainer.world_size} rank(s) is "
                    f"{expected}: remove train_batch_size from the JSON or change the batch size, accumulation "
                    "or number of ranks so that they agree."
                )


def _training_buffers(module: torch.nn.Module) -> list[torch.Tensor]:
    """Buffers of submodules in training mode (batch-norm statistics); frozen parts stay in eval and never change."""
    return [buffer for child in module.modules() if child.training
            for buffer in child.buffers(recurse=False) if buffer is not None]


def load_deepspeed_config(config: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A ZeRO config as a dict: a dict as is, a JSON file, or a shipped name (`zero2`, `zero3`, `zero3_offload`)."""
    if isinstance(config, dict):
        return dict(config)
    path = Path(config)
    if not path.exists():
        shipped = CLUSTER_DEEPSPEED_DIR / f"{config}.json"
        if not shipped.exists():
            names = sorted(p.stem for p in CLUSTER_DEEPSPEED_DIR.glob("*.json"))
            raise FileNotFoundError(
                f"DeepSpeed config {str(config)!r} is neither a file nor a shipped name ({', '.join(names) or 'none'})"
            )
        path = shipped
    return json.loads(path.read_text())


def deepspeed_strategy(config: str | Path | dict[str, Any] | None = None, **kwargs: Any) -> ZeroStrategy:
    """`ZeroStrategy` for `config` (a ZeRO JSON path, dict or shipped name); `kwargs` go to the strategy (e.g.
    `stage=2` when no config is given). It runs on CUDA where the Trainer's accelerator is CUDA, else on CPU."""
    return ZeroStrategy(config=config, **kwargs)
