"""`CompleteCheckpoint`: Lightning's `ModelCheckpoint`, writing a completion marker after every rank has saved.

The marker format and its checks live in `lit_medxchat.training.completion` (no Lightning); this module
is the training-time side: it writes markers, stores every rank's RNG states, verifies a resumed
checkpoint before any weight is loaded, and makes Lightning's `ckpt_path="last"` skip torn checkpoints.

Loggers that want something stored with each checkpoint (the W&B run id, so a restarted job continues
the same run) expose `checkpoint_fields() -> dict`; this callback asks every logger of the trainer and
knows none of them by name, so logging depends on checkpointing and never the other way round.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

from lit_medxchat.training.completion import (
    VERIFY_MODES,
    check_world_size,
    complete_checkpoints,
    marker_path,
    verify_explicit_checkpoint,
    write_completion_marker,
)
from lit_medxchat.training.rng_state import RNG_KEY, gather_rng_states, set_rng_states

log = logging.getLogger(__name__)


def logger_checkpoint_fields(trainer: Any) -> dict[str, Any]:
    """What the trainer's loggers ask to store with a checkpoint; the first logger to name a key wins."""
    fields: dict[str, Any] = {}
    for logger in getattr(trainer, "loggers", []):
        contribute = getattr(logger, "checkpoint_fields", None)
        if callable(contribute):
            for key, value in contribute().items():
                fields.setdefault(key, value)
    return fields


class CompleteCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` whose checkpoints carry a completion marker, and whose `last` skips incomplete ones.

    Same arguments as `ModelCheckpoint`, plus `verify` ("sha256" or "size": how resume checks files).
    Lightning restores weights, optimizer, scheduler, loop counters and a stateful loader's position, but
    not RNG states: this callback stores every rank's RNG states in the checkpoint and puts them back
    just before the first training batch after a resume (after the data iterator is rebuilt, which
    draws from the global RNG), so dropout and noise sampling continue exactly.
    It also checks, before any weight is loaded, that the checkpoint being resumed is complete and was
    written by the same number of ranks when it is ZeRO-sharded. `extra_marker_fields` is stored in each
    marker; the loggers' `checkpoint_fields()` (the W&B run id) are added to it and to the checkpoint.
    """

    def __init__(self, *args: Any, verify: str = "sha256", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if verify not in VERIFY_MODES:
            raise ValueError(f"CompleteCheckpoint(verify={verify!r}): choose one of {VERIFY_MODES}")
        self.verify = verify
        self.extra_marker_fields: dict[str, Any] = {}
        self._pending_rng: dict[str, Any] | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.ckpt_path and Path(trainer.ckpt_path).exists():
            verify_explicit_checkpoint(trainer.ckpt_path, verify=self.verify, world_size=trainer.world_size)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint.update(logger_checkpoint_fields(trainer))  # the W&B run id travels with the weights
        checkpoint[RNG_KEY] = gather_rng_states(trainer)
        super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        states = checkpoint.get(RNG_KEY)
        if states is None:
            log.warning("checkpoint %s holds no RNG states: random ops (dropout, noise) will not continue exactly",
                        trainer.ckpt_path)
        elif len(states) != trainer.world_size:
            log.warning("checkpoint %s holds RNG states of %d ranks, this run has %d: random ops restart from the "
                        "seed, so losses will not match an uninterrupted run", trainer.ckpt_path, len(states),
                        trainer.world_size)
        else:
            self._pending_rng = states[trainer.global_rank]

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        if self._pending_rng is not None:
            set_rng_states(self._pending_rng)
            self._pending_rng = None

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        self.extra_marker_fields.update(logger_checkpoint_fields(trainer))
        # Remove the old marker first: overwriting `last.ckpt` must not leave the old marker vouching for it.
        if trainer.is_global_zero:
            marker_path(filepath).unlink(missing_ok=True)
        trainer.strategy.barrier("complete_checkpoint_unmark")
        super()._save_checkpoint(trainer, filepath)  # every rank has written when this returns (strategy barrier)
        trainer.strategy.barrier("complete_checkpoint_written")
        if trainer.is_global_zero:
            write_completion_marker(
                filepath, world_size=trainer.world_size, global_step=trainer.global_step,
                epoch=trainer.current_epoch, extra=self.extra_marker_fields, hash_files=self.verify == "sha256",
            )
        trainer.strategy.barrier("complete_checkpoint_marked")

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        if trainer.is_global_zero:
            marker_path(filepath).unlink(missing_ok=True)
        super()._remove_checkpoint(trainer, filepath)

    def _find_last_checkpoints(self, trainer) -> set[str]:
        """Used by Lightning for `ckpt_path="last"`: the newest *complete* checkpoint, not the newest file."""
        dirpath = self._ModelCheckpoint__resolve_ckpt_dir(trainer)  # Lightning's own rule (logger version dirs)
        found, skipped = complete_checkpoints(dirpath, verify=self.verify)
        if trainer.is_global_zero:
            for reason in skipped:
                log.warning("not resuming from an incomplete checkpoint: %s", reason)
        if not found:
            return set()
        newest, marker = found[0]
        # Checked here because Lightning loads the checkpoint (and DeepSpeed fails obscurely) before any hook runs.
        check_world_size(newest, marker, trainer.world_size)
        return {os.path.normpath(newest)}
