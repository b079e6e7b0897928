"""Cross-rank collection for corpus metrics: gather Python objects, score once on rank 0, broadcast.

Corpus metrics (BLEU, CIDEr, FID, macro AUROC) are not averages of per-rank values, so every rank's
items are gathered first. `CorpusMetricCallback` does the bookkeeping shared by the metric callbacks:
collect per batch in ``on_{validation,test}_batch_end``, gather at epoch end, score on rank 0,
broadcast the scalars, and log the same values on every rank (so ``ModelCheckpoint(monitor=...)``
and early stopping agree across ranks).

Lightning's ``DistributedSampler`` pads ranks with repeated samples to equal lengths; those repeats
would be scored twice. The project's WebDataset DataModules split shards by rank without padding.
"""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from lit_medxchat.core.distributed import broadcast_object, gather_lists, gather_objects, global_rank


class CorpusMetricCallback(Callback):
    """Collect items per batch, gather them at epoch end, score on rank 0, log everywhere.

    Subclasses implement `collect` (outputs of one step -> items; a step returning None is counted as
    a batch without outputs and reported at epoch end, small and picklable) and `score`
    (all items -> ``{name: value}``, value None/nan when undefined: such values are not logged but stay
    in `last_scores`). Hooks run for validation (``val/`` keys) and test (``test/`` keys). During
    Lightning's sanity check nothing is scored (unless ``score_sanity_check``), which keeps the first
    validation free of slow scorers such as METEOR's JVM.
    """

    def __init__(self, score_sanity_check: bool = False) -> None:
        super().__init__()
        self.score_sanity_check = score_sanity_check
        self._items: list[Any] = []
        self._batches_without_outputs = 0
        self.last_batches_without_outputs = 0
        self.last_scores: dict[str, float | None] = {}
        self.last_items: list[Any] = []

    # --- to implement -------------------------------------------------------------------------------
    def collect(self, outputs: Any, batch: Any, pl_module: LightningModule) -> list[Any]:
        raise NotImplementedError

    def score(self, items: list[Any]) -> dict[str, float | None]:
        raise NotImplementedError

    def log_samples(self, trainer: Trainer, items: list[Any], stage: str) -> None:
        """Optional: rank-0 sample tables/images (patient data: only when the user opts in)."""

    # --- Lightning hooks ----------------------------------------------------------------------------
    def _reset(self) -> None:
        self._items = []
        self._batches_without_outputs = 0

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._reset()

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._reset()

    def _batch_end(self, outputs: Any, batch: Any, pl_module: LightningModule) -> None:
        if outputs is None:  # e.g. the diffusion model generates on its first few validation batches only
            self._batches_without_outputs += 1
            return
        if not isinstance(outputs, dict):
            raise TypeError(
                f"{type(self).__name__}: the validation/test step returned {type(outputs).__name__}; it must return "
                "the output dict documented in docs/metrics.md (or None for a batch not to score)"
            )
        self._items.extend(self.collect(outputs, batch, pl_module))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.sanity_checking and not self.score_sanity_check:
            return
        self._batch_end(outputs, batch, pl_module)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch_end(outputs, batch, pl_module)

    def _epoch_end(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        items = gather_lists(self._items)
        skipped = sum(gather_objects(self._batches_without_outputs))
        self.last_batches_without_outputs = skipped
        if skipped:
            rank_zero_info(
                f"{type(self).__name__}: {len(items)} items scored; {skipped} {stage} batches returned no outputs "
                "and were not scored"
            )
        scores, error, failure = None, None, None
        if global_rank() == 0:
            try:
                scores = self.score(items)
            except Exception as err:  # re-raised below on every rank, so no rank waits forever
                failure, error = err, f"{type(err).__name__}: {err}"
        scores, error = broadcast_object((scores, error))
        if failure is not None:
            raise failure
        if error is not None:
            raise RuntimeError(f"{type(self).__name__}: scoring on rank 0 failed ({error})")
        self.last_scores, self.last_items = scores, items
        for name, value in scores.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            pl_module.log(f"{stage}/{name}", float(value), on_epoch=True, sync_dist=False, add_dataloader_idx=False)
        if global_rank() == 0:
            self.log_samples(trainer, items, stage)
        self._reset()  # free memory until the next epoch

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking and not self.score_sanity_check:
            return
        self._epoch_end(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_end(trainer, pl_module, "test")
