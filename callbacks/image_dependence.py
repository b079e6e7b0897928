"""Validation callback that logs whether the chat model reads its images (see
`callbacks.scoring.image_dependence` for why): `val/adapter_sensitivity` and `val/image_loss_gap`.

Both are shown in the progress bar and sent to every logger (W&B), so a collapsed adapter is seen at
the first validation of a cluster run rather than in the test reports after it. The gap costs one
extra teacher-forced forward per scored batch (images replaced by the blank image the blank-image
baseline trains on: zeros after normalisation); `max_batches` bounds it.

Safe on any number of ranks: the scores are computed from every rank's gathered values (the same
number on each rank, so nothing is logged with a collective some ranks skip), and under ZeRO-3, where
each forward all-gathers parameters with the other ranks, a rank whose batch has no image still runs
the same forwards (on a blank image) without counting them.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from callbacks.scoring.image_dependence import adapter_sensitivity
from lit_medxchat.core.distributed import gather_lists, gather_objects, parameters_partitioned


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
        self._gaps: list[tuple[float, float]] = []

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._outputs, self._gaps = [], []

    @torch.no_grad()
    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx >= self.max_batches or trainer.sanity_checking or not isinstance(batch, dict):
            return
        has_images = _has_images(batch)
        if not has_images and not parameters_partitioned(pl_module):
            return
        if has_images:
            images = batch["pixel_values"][batch["image_mask"].bool()]
        else:  # ZeRO-3: join the other ranks' tower and adapter forwards, count nothing
            images = pl_module.model.blank_images(1)
        encoded = pl_module.encode_images(images).float().cpu()
        if "labels" in batch:
            real = float(pl_module(batch))
            blank_pixels = torch.zeros_like(batch["pixel_values"]) if "pixel_values" in batch else None
            blank = float(pl_module({**batch, "pixel_values": blank_pixels}))
        if has_images:
            self._outputs.append(encoded)
            if "labels" in batch:
                self._gaps.append((real, blank))

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        parts = gather_objects(torch.cat(self._outputs) if self._outputs else None)
        outputs = [part for part in parts if part is not None]
        gaps = gather_lists(self._gaps)
        scores: dict[str, float] = {}
        if outputs and sum(part.shape[0] for part in outputs) >= 2:
            scores["val/adapter_sensitivity"] = adapter_sensitivity(torch.cat(outputs))
        if gaps:
            scores["val/image_loss_gap"] = sum(blank - real for real, blank in gaps) / len(gaps)
        for name, value in scores.items():
            # Every rank holds the same gathered value: no collective in the logging itself.
            pl_module.log(name, value, prog_bar=True, sync_dist=False)


def _has_images(batch: Any) -> bool:
    return isinstance(batch, dict) and "image_mask" in batch and bool(batch["image_mask"].any())
