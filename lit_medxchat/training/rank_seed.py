"""Different random streams on every rank, reproducibly: the run's seed offset by the global rank.

`seed_everything: 0` seeds every rank alike, before the model is built, which the model needs (every rank
must build the same weights). Left so, every rank then draws the same dropout masks and the same random ops on
different samples: a global batch of 8 ranks carries 8 copies of one mask. Once the model exists (`setup`),
`PerRankSeed` re-seeds torch, numpy and Python `random` with `seed + global_rank`. Per-sample randomness keyed
to the data (augmentation, CXR-SD noise) does not depend on it; a resumed run restores every rank's own RNG
states from the checkpoint (`CompleteCheckpoint`) after this, so resume stays exact.
"""

from __future__ import annotations

import os

import lightning.pytorch as pl
from lightning.pytorch import Callback


class PerRankSeed(Callback):
    """Re-seeds each rank with `seed + global_rank` when fitting starts (a no-op on one process).

    Args:
        seed: the run's seed; default: the one `seed_everything` set (`PL_GLOBAL_SEED`), else 0.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or trainer.world_size == 1:
            return
        from lightning.fabric.utilities.seed import seed_everything

        if self.seed is None:  # read once: seed_everything below rewrites PL_GLOBAL_SEED
            self.seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        seed_everything(self.seed + trainer.global_rank, workers=True, verbose=False)
