"""W&B runs that survive preemption: the run id travels in the checkpoint, the logged step never goes back.

A SLURM requeue restarts the script from scratch; a plain `WandbLogger` then opens a *new* run and the
dashboard shows two half-curves. `ContinuingWandbLogger` reopens the run the checkpoint was written
under (`id=<stored id>, resume="allow"`), and drops metric rows whose step is not past the last step
the run had already logged before the restart (those steps are recomputed identically after an exact
resume; W&B would reject them anyway), counting and reporting how many it dropped.

Where the id comes from, first match wins: the `id` argument; `resume_checkpoint` (given by the
script, or handed over by `lit-medxchat fit --ckpt_path ...`, see `lit_medxchat.training.cli`); none ->
a new run. The id is read from the checkpoint's completion marker (no tensor is loaded) or, failing
that, from the checkpoint's `wandb` entry. `CompleteCheckpoint` stores both, asking this logger for them
through `checkpoint_fields()`: this module reads checkpoints, the checkpoint modules never import it.

Offline mode (`offline=True` or `WANDB_MODE=offline`) needs no account; offline runs with the same id
merge when uploaded with `wandb sync`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "wandb"
STEP_KEY = "trainer/global_step"


def run_id_from_checkpoint(checkpoint: str | Path) -> str | None:
    """The W&B run id stored with a checkpoint (marker first, then the checkpoint itself); None if absent."""
    from lit_medxchat.training.completion import read_marker

    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist: cannot read its W&B run id")
    marker = read_marker(checkpoint)
    if marker is not None:
        run = (marker.get("extra") or {}).get(CHECKPOINT_KEY) or {}
        return run.get("id")
    from lit_medxchat.core.checkpoint_files import load_checkpoint_file

    if checkpoint.is_dir():  # DeepSpeed: rank 0's model-states file holds Lightning's client state
        candidates = sorted(checkpoint.rglob("*mp_rank_00_model_states.pt"))
        if not candidates:
            return None
        checkpoint = candidates[0]
    state = load_checkpoint_file(checkpoint, map_location="cpu", mmap=True)
    return (state.get(CHECKPOINT_KEY) or {}).get("id")


class ContinuingWandbLogger(WandbLogger):
    """`WandbLogger` that resumes the checkpoint's run and never logs a step at or before its resume point.

    Args:
        project: W&B project. entity: team or user (None: your default). tags: run tags.
        name: display name. save_dir: local folder of W&B files (offline runs live here).
        offline: write locally only (no account needed); upload later with `wandb sync`.
        resume_checkpoint: checkpoint being resumed; can also be set (before the run starts) through the
            `resume_checkpoint` attribute, which is how `lit-medxchat fit --ckpt_path` hands it over.
        id: force a run id (takes precedence over the checkpoint's).
        kwargs: passed to `WandbLogger` / `wandb.init` (group, job_type, notes, mode, ...).
    """

    def __init__(
        self,
        project: str = "lit-medxchat",
        entity: str | None = None,
        tags: list[str] | None = None,
        name: str | None = None,
        save_dir: str = "runs",
        offline: bool = False,
        resume_checkpoint: str | None = None,
        id: str | None = None,  # noqa: A002 - wandb's own name for it
        **kwargs: Any,
    ) -> None:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        if entity is not None:
            kwargs["entity"] = entity
        if tags:
            kwargs["tags"] = list(tags)
        super().__init__(project=project, name=name, save_dir=save_dir, offline=offline, id=id, **kwargs)
        self._resume_checkpoint = str(resume_checkpoint) if resume_checkpoint else None
        self._resume_step: int | None = None
        self.last_logged_step: int | None = None
        self.skipped_rows = 0

    @property
    def resume_checkpoint(self) -> str | None:
        """The checkpoint whose W&B run this logger continues (None: a new run, unless `id` is given)."""
        return self._resume_checkpoint

    @resume_checkpoint.setter
    def resume_checkpoint(self, checkpoint: str | Path | None) -> None:
        if self._experiment is not None:
            raise RuntimeError(
                f"ContinuingWandbLogger: W&B run {self._experiment.id} is already open; set resume_checkpoint="
                f"{checkpoint} before the trainer starts (or pass it to the constructor)"
            )
        self._resume_checkpoint = str(checkpoint) if checkpoint else None

    def checkpoint_fields(self) -> dict[str, Any]:
        """What `CompleteCheckpoint` stores so a resume finds the run: {"wandb": {id, project, last_step}} or {}."""
        if self.version is None:
            return {}
        return {CHECKPOINT_KEY: {"id": self.version, "project": self.name, "last_step": self.last_logged_step}}

    def _resolve_resume(self) -> None:
        """Before wandb.init: adopt the checkpoint's run id and `resume="allow"`."""
        if self._wandb_init.get("id"):
            self._wandb_init.setdefault("resume", "allow")
            return
        checkpoint = self._resume_checkpoint
        if not checkpoint:
            return
        run_id = run_id_from_checkpoint(checkpoint)
        if run_id is None:
            log.warning("checkpoint %s stores no W&B run id (saved without CompleteCheckpoint?): starting a new "
                        "W&B run", checkpoint)
            return
        self._wandb_init.update(id=run_id, resume="allow")
        self._id = run_id
        log.info("W&B: continuing run %s from checkpoint %s", run_id, checkpoint)

    @property
    def experiment(self):  # type: ignore[override]
        if self._experiment is None:
            self._resolve_resume()
            run = super().experiment
            if rank_zero_only.rank != 0:  # other ranks get Lightning's dummy experiment
                return run
            self._resume_step = self._previous_last_step(run)
            self.last_logged_step = self._resume_step
            return run
        return super().experiment

    def _previous_last_step(self, run: Any) -> int | None:
        """The highest step the run logged before this process: W&B's summary (online), our step file (offline)."""
        steps = []
        summary = getattr(run, "summary", None)
        try:
            value = summary.get(STEP_KEY) if summary is not None else None
        except (AttributeError, KeyError, TypeError) as error:
            log.warning("W&B: cannot read the run summary (%s); relying on the local step file", error)
            value = None
        if value is not None:
            steps.append(int(value))
        state = self._read_state_file()
        if state.get("id") == self.version and state.get("last_step") is not None:
            steps.append(int(state["last_step"]))
        return max(steps) if steps else None

    @property
    def state_file(self) -> Path:
        """`<save_dir>/wandb-run-<id>.json`: last logged step of the run, kept locally for offline resumes."""
        return Path(self.save_dir or ".") / f"wandb-run-{self.version}.json"

    def _read_state_file(self) -> dict[str, Any]:
        path = self.state_file
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as error:
            log.warning("W&B step file %s is not valid JSON (%s); ignoring it", path, error)
            return {}

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        run = self.experiment  # resolves the resume step on first use
        if step is not None and self._resume_step is not None and step <= self._resume_step:
            self.skipped_rows += 1
            if self.skipped_rows == 1 or self.skipped_rows % 100 == 0:
                log.info("W&B run %s already holds step %d: not logging step %d again (%d rows skipped so far; an "
                         "exact resume recomputes the same values)", run.id, self._resume_step, step,
                         self.skipped_rows)
            return
        super().log_metrics(metrics, step)
        if step is not None and (self.last_logged_step is None or step > self.last_logged_step):
            self.last_logged_step = step
            self._write_state_file()

    def _write_state_file(self) -> None:
        state = {"id": self.version, "last_step": self.last_logged_step, "skipped_rows": self.skipped_rows}
        tmp = self.state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_file)


def wandb_logger(
    project: str = "lit-medxchat",
    entity: str | None = None,
    tags: list[str] | None = None,
    save_dir: str = "runs",
    offline: bool | None = None,
    resume_checkpoint: str | None = None,
    **kwargs: Any,
) -> ContinuingWandbLogger:
    """Factory for scripts: offline when `offline` is True or `WANDB_MODE` is offline/dryrun."""
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        raise ImportError("W&B logging needs the `wandb` package: pip install 'lit-medxchat[wandb]'")
    if offline is None:
        offline = os.environ.get("WANDB_MODE", "") in ("offline", "dryrun")
    return ContinuingWandbLogger(project=project, entity=entity, tags=tags, save_dir=save_dir, offline=offline,
                                 resume_checkpoint=resume_checkpoint, **kwargs)
