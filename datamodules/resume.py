"""A DataLoader whose data position survives a checkpoint exactly, per rank and per worker.

Why not a plain `DataLoader` or torchdata's `StatefulDataLoader` over a WebDataset pipeline:
- Lightning saves a loader's position only if the loader has `state_dict`/`load_state_dict`, and only
  rank 0's checkpoint is written: other ranks' positions are lost unless gathered. `state_dict` here
  gathers every rank's position (`all_gather_object`) into the one checkpoint; each rank restores its own.
- A shuffle buffer's contents cannot be restored cheaply. Our epoch plan (`epoch_plan.py`) is a pure
  function of (seed, epoch, rank), so the whole position is "epoch e, batch k": every worker recomputes
  which batches it still owes. That also makes the position independent of `num_workers`.
- Lightning prefetches one batch only from loaders *without* a length (to detect the last batch); this
  loader has one (batches per rank from the manifest), so the count of batches handed out equals the
  count of batches trained on when a checkpoint is written: no batch is skipped on resume.

`set_epoch` is reached by Lightning through `loader.sampler.set_epoch`, the hook it calls on samplers at
every epoch start; plain loops call `loader.set_epoch(epoch)` themselves.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

from datamodules.step_totals import StepTotals
from datamodules.streaming import SKIPPED_PREFIX, ShardBatchStream
from lit_medxchat.core.distributed import gather_objects

log = logging.getLogger(__name__)
STATE_FORMAT = 1
_REBUILD_ARGUMENTS = {
    "sampler", "batch_sampler", "batch_size", "shuffle", "drop_last", "collate_fn", "worker_init_fn", "generator",
    "multiprocessing_context", "persistent_workers", "in_order", "pin_memory_device",
}


def _unbatched(item: Any) -> Any:
    """The stream yields ready batches; the DataLoader must pass them through untouched."""
    return item


class _EpochSampler:
    """Stands in for the IterableDataset's constant sampler so Lightning's `set_epoch` hook reaches us."""

    def __init__(self, loader: ResumableLoader) -> None:
        self._loader = loader

    def __iter__(self) -> Iterator[None]:
        return itertools.repeat(None)

    def set_epoch(self, epoch: int) -> None:
        self._loader.set_epoch(epoch)


class ResumableLoader(DataLoader):
    """DataLoader over a `ShardBatchStream` with an exact, all-ranks `state_dict`.

    Args:
        dataset: the rank's batch stream (already told its rank and world size).
        num_workers: worker processes; any number gives the same batch sequence.
        cumulative_counts: keep event counts (skipped samples by reason, truncated dialogues) across epochs
            (training) or reset them at the start of every pass (evaluation: counts per validation run).
        pin_memory, prefetch_factor, timeout: as for `DataLoader`. Workers are never persistent: each epoch
            ships the new (epoch, start batch) to fresh workers.
    """

    def __init__(
        self,
        dataset: ShardBatchStream,
        *,
        num_workers: int = 0,
        cumulative_counts: bool = True,
        pin_memory: bool = False,
        prefetch_factor: int | None = None,
        timeout: float = 0.0,
        **lightning_injected: Any,
    ) -> None:
        # Lightning re-creates loaders for `predict` from their attributes, passing `sampler`,
        # `batch_sampler`, `batch_size`, ...: this loader makes its own and ignores them.
        unknown = set(lightning_injected) - _REBUILD_ARGUMENTS
        if unknown:
            raise TypeError(f"ResumableLoader got unexpected arguments {sorted(unknown)}")
        super().__init__(
            dataset,
            batch_size=None,
            num_workers=num_workers,
            collate_fn=_unbatched,
            pin_memory=pin_memory,
            prefetch_factor=prefetch_factor if num_workers > 0 else None,
            persistent_workers=False,
            timeout=timeout,
        )
        # DataLoader forbids re-assigning `sampler` after __init__; bypass it for our epoch hook only.
        object.__setattr__(self, "sampler", _EpochSampler(self))
        self.cumulative_counts = cumulative_counts
        self.counts: Counter[str] = Counter()
        self._epoch = 0
        self._consumed = 0
        self._resume_at: tuple[int, int] | None = None
        # Set by a DataModule whose model normalises its loss over whole optimiser steps (`step_totals.py`).
        self.step_totals: StepTotals | None = None

    @property
    def skipped(self) -> dict[str, int]:
        """Samples dropped by reason (bad JPEG, missing member, too long, ...) on this rank."""
        return {name[len(SKIPPED_PREFIX):]: n for name, n in self.counts.items() if name.startswith(SKIPPED_PREFIX)}

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def batches_consumed(self) -> int:
        """Batches of the current epoch handed out so far (including those skipped over by a resume)."""
        return self._consumed

    def set_epoch(self, epoch: int) -> None:
        if epoch != self._epoch:
            self._consumed = 0
        self._epoch = int(epoch)

    def __iter__(self) -> Iterator[Any]:
        # Lazy on purpose: Lightning creates the iterator before it calls `set_epoch` for the epoch.
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        start = 0
        if self._resume_at is not None:
            epoch, batches = self._resume_at
            self._resume_at = None
            if epoch == self._epoch:
                start = batches
        if not self.cumulative_counts:
            self.counts = Counter()
        self.dataset.epoch = self._epoch
        self.dataset.start_batch = start
        self._consumed = start
        items = super().__iter__()
        if self.step_totals is not None:  # reads up to one optimiser step ahead; counted when handed out
            items = self.step_totals.annotate(items, start)
        for batch, counts in items:
            self._consumed += 1
            self.counts.update(counts)
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """Every rank's (epoch, batches consumed, skip counts). Collective under DDP: all ranks must call it."""
        local = {
            "rank": self.dataset.rank,
            "world_size": self.dataset.world_size,
            "epoch": self._epoch,
            "batches": self._consumed,
            "num_batches": len(self),
            "lanes": self.dataset.lanes,
            "counts": dict(self.counts),
        }
        return {"format": STATE_FORMAT, "ranks": gather_objects(local)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore this rank's position; the next iteration of that epoch starts at the saved batch."""
        if state.get("format") != STATE_FORMAT or not state.get("ranks"):
            raise ValueError(f"loader state of an unknown format: {sorted(state)}; was it saved by ResumableLoader?")
        ranks = state["ranks"]
        rank, world_size = self.dataset.rank, self.dataset.world_size
        if len(ranks) != world_size:
            log.warning(
                "resuming on %d rank(s) from a checkpoint written by %d: samples are re-dealt among ranks, so the "
                "rest of this epoch is approximate (the batch index is kept); later epochs are exact",
                world_size,
                len(ranks),
            )
        mine = ranks[rank] if len(ranks) == world_size else ranks[0]
        lanes = int(mine.get("lanes", 1))
        if lanes != self.dataset.lanes:
            # The batch sequence is a function of the lanes, not of num_workers: keep the checkpoint's.
            log.warning("resuming with the checkpoint's %d read lane(s) instead of %d (set lanes to silence this)",
                        lanes, self.dataset.lanes)
            self.dataset.lanes = lanes
        self._epoch = int(mine["epoch"])
        self._consumed = int(mine["batches"])
        self._resume_at = (self._epoch, self._consumed)
        self.counts = Counter(mine.get("counts", {}))
