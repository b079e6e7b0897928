"""Validation callback that logs whether the chat model reads its images (see
`callbacks.scoring.image_dependence` for why): `val/adapter_sensitivity` and `val/image_loss_gap`.

Both are shown in the progress bar and sent to every logger (W&B), so a collapsed adapter is seen at
the first validation of a cluster run rather than in the test reports after it. The gap costs one
extra teacher-forced forward per scored batch (images replaced by the blank image the blank-image
baseline trains on: zeros after normalisation); `max_batches` bounds it.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from callbacks.scoring.image_dependence import adapter_sensitivity


class ImageDependence(Callback):
    """Logs `val/adapter_sensitivity` and `val/image_loss_gap` (blank-image loss minus real-image loss).

    Args:
        max_batches: validation batches scored per epoch (the first ones; the rest are not touched).
    """

    def __init__(self, max_batches: int = 4) -> None:
        if max_batches < 1:
            raise ValueError(f"max_batches={max_batches} must be >= 1")
        self.max_batches = max_batches
        self._outputs: list[torch.Tensor] = []
        self._real: list[float] = []
        self._blank: list[float] = []

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._outputs, self._real, self._blank = [], [], []

    @torch.no_grad()
    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx >= self.max_batches or trainer.sanity_checking or not _has_images(batch):
            return
        images = batch["pixel_values"][batch["image_mask"].bool()]
        self._outputs.append(pl_module.encode_images(images).float().cpu())
        if "labels" in batch:
            self._real.append(float(pl_module(batch)))
            self._blank.append(float(pl_module({**batch, "pixel_values": torch.zeros_like(batch["pixel_values"])})))

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        scores: dict[str, float] = {}
        outputs = torch.cat(self._outputs) if self._outputs else torch.zeros(0)
        if outputs.shape[0] >= 2:
            scores["val/adapter_sensitivity"] = adapter_sensitivity(outputs)
        if self._real:
            scores["val/image_loss_gap"] = (sum(self._blank) - sum(self._real)) / len(self._real)
        for name, value in scores.items():
            # Per-rank values are averaged across ranks (each rank scored its own batches).
            pl_module.log(name, value, prog_bar=True, sync_dist=True)


def _has_images(batch: Any) -> bool:
    return isinstance(batch, dict) and "image_mask" in batch and bool(batch["image_mask"].any())
