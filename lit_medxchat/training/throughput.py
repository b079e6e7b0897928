"""Samples/s, tokens/s and MFU per device, logged during training with Lightning's throughput utilities.

Lightning's `ThroughputMonitor` needs a batch-size function, a length function and a `flops_per_batch`
attribute on the module. Our three models' batches follow `docs/data-contracts.md`, so the first two are
fixed here: samples = the batch's leading dimension; items = non-padding tokens of `attention_mask`
(the chat model; the logged `items_per_sec` are then tokens/s). FLOPs per batch come from the module's
own `flops_per_batch` when it defines one; otherwise they are *counted* on the first training batch
with `torch.utils.flop_counter.FlopCounterMode` around the real step (forward + backward; no extra
step is run), which covers frozen parts' activation gradients and LoRA alike. MFU is FLOPs/s divided
by the device's peak for the run's precision (Lightning's table of GPUs; None on CPU, so no MFU there
unless `available_flops` is given).

Logged keys (rank 0, every `log_every_n_steps`): `train/device/samples_per_sec`, `train/device/items_per_sec`,
`train/device/flops_per_sec`, `train/device/mfu` and, with several ranks, the global `train/samples_per_sec`,
`train/items_per_sec`, `train/flops_per_sec`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)

# Batch keys whose leading dimension is the number of samples, in order of preference (data contracts §3).
SAMPLE_KEYS = ("input_ids", "pixel_values", "labels")


def batch_size(batch: Any) -> int:
    """Samples in a batch: leading dimension of the first of `SAMPLE_KEYS` present (or of a bare tensor)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        for key in SAMPLE_KEYS:
            if isinstance(batch.get(key), torch.Tensor):
                return int(batch[key].shape[0])
        for value in batch.values():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                return int(value.shape[0])
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], torch.Tensor):
        return int(batch[0].shape[0])
    raise TypeError(
        f"cannot tell the batch size of a {type(batch).__name__}: give the batch one of {SAMPLE_KEYS} "
        "or pass batch_size_fn= to MedXChatThroughput"
    )


def token_count(batch: Any) -> int:
    """Non-padding tokens of a chat batch (`attention_mask` sum); the sample count for image-only batches.

    Throughput requires items >= samples, so a batch without tokens counts one item per sample.
    """
    if isinstance(batch, dict) and isinstance(batch.get("attention_mask"), torch.Tensor):
        return max(int(batch["attention_mask"].sum()), batch_size(batch))
    return batch_size(batch)


class MedXChatThroughput(ThroughputMonitor):
    """`ThroughputMonitor` for our batches, with FLOPs counted on the first step when the module has none.

    Args:
        count_tokens: log items (= tokens) per second; on for the chat model, meaningless for images.
        available_flops: peak FLOP/s of one device, to get MFU where Lightning's table has no entry
            (e.g. a new GPU, or a CPU for tests). None: Lightning's table for the device and precision.
        window_size: steps in the rolling average (Lightning's default is 100; shorter for short runs).
        measure_flops: count FLOPs on the first batch when the module defines no `flops_per_batch`.
    """

    def __init__(self, count_tokens: bool = False, available_flops: float | None = None, window_size: int = 20,
                 measure_flops: bool = True, **kwargs: Any) -> None:
        super().__init__(batch_size_fn=batch_size, length_fn=token_count if count_tokens else None,
                         window_size=window_size, **kwargs)
        self.fixed_available_flops = available_flops
        self.measure_flops = measure_flops
        self.measured_flops_per_batch: int | None = None
        self._counter: Any = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.fixed_available_flops is not None:
            self.available_flops = int(self.fixed_available_flops)
            for throughput in self._throughputs.values():
                throughput.available_flops = self.available_flops
        if self.available_flops is None:
            log.info("MFU not logged: no peak FLOP/s known for %s (pass available_flops=)",
                     trainer.strategy.root_device)

    def _wants_measurement(self, pl_module) -> bool:
        return (self.measure_flops and self.measured_flops_per_batch is None
                and getattr(pl_module, "flops_per_batch", None) is None)

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        if self._wants_measurement(pl_module) and self._counter is None:
            from torch.utils.flop_counter import FlopCounterMode

            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()

    @rank_zero_only
    def _publish_flops(self, pl_module) -> None:
        log.info("FLOPs per training batch on this device (counted on the first step): %.3e",
                 self.measured_flops_per_batch)

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.measured_flops_per_batch = int(self._counter.get_total_flops())
            self._counter = None
            if getattr(pl_module, "flops_per_batch", None) is None:
                pl_module.flops_per_batch = self.measured_flops_per_batch
            self._publish_flops(pl_module)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self._counter is not None:  # never leave a dispatch mode active after a failed step
            self._counter.__exit__(None, None, None)
            self._counter = None
