"""DeepSpeed ZeRO without CUDA, and the helper that picks the right DeepSpeed strategy for the machine.

Lightning's `DeepSpeedStrategy` refuses any accelerator but CUDA. Our CI and laptops have no GPU, yet the
things that break on clusters (sharded checkpoint layout, resume, fp32 conversion, frozen parameters kept
out of the shards) are all exercised by ZeRO on CPU processes talking over gloo. `CPUDeepSpeedStrategy`
changes exactly three things of the stock strategy; on a CUDA machine `deepspeed_strategy()` returns the
stock one, so cluster runs use Lightning's code path untouched.

DeepSpeed JIT-compiles a CPU communication op the first time it runs (about 30 s); point
`TORCH_EXTENSIONS_DIR` at a persistent folder to pay that once.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

# Shipped ZeRO configs (repository checkout only: `cluster/` is not installed).
CLUSTER_DEEPSPEED_DIR = Path(__file__).resolve().parents[2] / "cluster" / "deepspeed"


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    """`DeepSpeedStrategy` running ZeRO stage 1-3 on CPU processes with the gloo backend.

    Same arguments as `lightning.pytorch.strategies.DeepSpeedStrategy` (`stage`, `config`, offload options,
    `exclude_frozen_parameters`, ...). Precision: `32-true` or `bf16-mixed`; fp16 has no CPU kernels.
    `exclude_frozen_parameters` defaults to True here (the stock default is False): checkpoints must never
    carry a frozen base model.
    """

    strategy_name = "deepspeed_cpu"

    def __init__(self, *args: Any, exclude_frozen_parameters: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, exclude_frozen_parameters=exclude_frozen_parameters, **kwargs)

    def setup_environment(self) -> None:
        """Skip the stock CUDA-only check; DDP's set-up (device, then `setup_distributed`) is all we need."""
        DDPStrategy.setup_environment(self)

    def setup_distributed(self) -> None:
        """Set ranks and start DeepSpeed's process group on gloo (the stock one validates CUDA indices)."""
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
        """`deepspeed.initialize` with only trainable parameters; CPU devices have no index to pass."""
        import deepspeed

        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError(
                f"{type(model).__name__} has no trainable parameter: DeepSpeed needs at least one "
                "(check which parts the model freezes)."
            )
        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.local_rank),
            config=self.config,
            model=model,
            model_parameters=trainable,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            dist_init_required=False,
        )
        return engine, ds_optimizer


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


def deepspeed_strategy(config: str | Path | dict[str, Any] | None = None, **kwargs: Any) -> DeepSpeedStrategy:
    """The DeepSpeed strategy for this machine: Lightning's on CUDA, `CPUDeepSpeedStrategy` otherwise.

    `config` is a ZeRO JSON (path, dict or shipped name); `kwargs` go to the strategy (e.g. `stage=2`
    when no config is given). Frozen parameters are excluded from checkpoints in both cases.
    `LIT_MEDXCHAT_FORCE_CPU_DEEPSPEED=1` picks the CPU strategy even where CUDA exists (to reproduce CI).
    """
    kwargs.setdefault("exclude_frozen_parameters", True)
    if config is not None:
        kwargs["config"] = load_deepspeed_config(config)
    if torch.cuda.is_available() and os.environ.get("LIT_MEDXCHAT_FORCE_CPU_DEEPSPEED") != "1":
        return DeepSpeedStrategy(**kwargs)
    return CPUDeepSpeedStrategy(**kwargs)
