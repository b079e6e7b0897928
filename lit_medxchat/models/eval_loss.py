"""Validation and test losses that mean the same on any number of ranks.

`self.log(..., sync_dist=True)` averages each rank's own epoch mean: with 9 validation samples on 4 ranks
(3, 2, 2, 2) the first rank's samples count less than the others', and the figure differs from one process's
on the same checkpoint. A `MeanMetric` per stage keeps the weighted sum and the weight and adds both over
ranks before dividing, so the logged loss is the mean over every sample (or answer token, or label) of the
split, whatever the number of ranks and the batch layout.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn

STAGES = ("val", "test")


def eval_loss_metrics() -> nn.ModuleDict:
    """One weighted mean per evaluation stage; register it on the LightningModule (as `eval_losses`)."""
    from torchmetrics import MeanMetric

    return nn.ModuleDict({stage: MeanMetric() for stage in STAGES})


def log_eval_loss(
    module: pl.LightningModule, stage: str, loss: torch.Tensor, weight: float | torch.Tensor, prog_bar: bool = True
) -> None:
    """Add `loss` (a mean over `weight` items) to `module.eval_losses[stage]` and log `<stage>/loss` from it."""
    metric = module.eval_losses[stage]
    metric.update(loss.detach().float(), weight=torch.as_tensor(weight, dtype=torch.float32, device=loss.device))
    module.log(f"{stage}/loss", metric, prog_bar=prog_bar)
