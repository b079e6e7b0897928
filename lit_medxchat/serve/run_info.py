"""What the page header says about the models it serves, read from their run folders.

A screenshot of the chat must say which model produced it: the run, the checkpoint (and its
training step) and the data it was trained on. All of it comes from what `lit-medxchat fit`
leaves in a run folder (docs/data-contracts.md, section 4): `checkpoints/*.ckpt` with their
completion markers, and the `config.yaml` LightningCLI saves under `lightning_logs/version_*/`.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_medxchat.training.completion import read_marker

_STEP_IN_NAME = re.compile(r"epoch=(\d+)-step=(\d+)")


@dataclass(frozen=True)
class RunInfo:
    """One served model.

    Attributes:
        role: what the model does on the page ("chat model", "CXR-SD", "view classifier").
        run_dir: the run folder, absolute.
        checkpoint: the checkpoint loaded from it.
        global_step, epoch: the training step and epoch of that checkpoint, when known.
        data_dir: the shards it was trained on (`data.init_args.data_dir` of its config), when known.
        train_samples: samples in that data's train split (its manifest), when readable.
    """

    role: str
    run_dir: Path
    checkpoint: Path
    global_step: int | None = None
    epoch: int | None = None
    data_dir: str | None = None
    train_samples: int | None = None

    @property
    def checkpoint_text(self) -> str:
        """`last.ckpt` (step 40, epoch 3): what the header shows for the checkpoint."""
        if self.global_step is None:
            return f"`{self.checkpoint.name}`"
        epoch = f", epoch {self.epoch}" if self.epoch is not None else ""
        return f"`{self.checkpoint.name}` (step {self.global_step}{epoch})"

    @property
    def data_text(self) -> str:
        if self.data_dir is None:
            return "unknown (no config.yaml in the run folder)"
        samples = f" ({self.train_samples} training samples)" if self.train_samples is not None else ""
        return f"`{self.data_dir}`{samples}"


def newest_config(run_dir: Path) -> Path | None:
    """The config.yaml of the run's latest `fit` (LightningCLI writes one per logger version)."""
    found = list(run_dir.glob("lightning_logs/version_*/config.yaml")) + list(run_dir.glob("config.yaml"))
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _step_and_epoch(checkpoint: Path) -> tuple[int | None, int | None]:
    marker = read_marker(checkpoint)
    if marker is not None:
        return marker.get("global_step"), marker.get("epoch")
    match = _STEP_IN_NAME.search(checkpoint.name)
    return (int(match.group(2)), int(match.group(1))) if match else (None, None)


def _train_samples(data_dir: str) -> int | None:
    manifest = Path(data_dir) / "train" / "manifest.json"
    try:
        return int(json.loads(manifest.read_text())["num_samples"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def describe_run(role: str, run_dir: str | Path, checkpoint: str | Path) -> RunInfo:
    """Read what the header shows about `checkpoint` of `run_dir`; missing facts stay None."""
    import yaml

    run_dir, checkpoint = Path(run_dir).resolve(), Path(checkpoint).resolve()
    step, epoch = _step_and_epoch(checkpoint)
    data_dir, samples = None, None
    config_file = newest_config(run_dir)
    if config_file is not None:
        config: Any = yaml.safe_load(config_file.read_text()) or {}
        data = (config.get("data") or {}).get("init_args") or {}
        if data.get("data_dir"):
            data_dir = str(data["data_dir"])
            samples = _train_samples(data_dir)
    return RunInfo(role, run_dir, checkpoint, step, epoch, data_dir, samples)


def header_markdown(runs: list[RunInfo]) -> str:
    """The page header: one table row per served model."""
    rows = ["| model | run folder | checkpoint | trained on |", "|---|---|---|---|"]
    for run in runs:
        rows.append(f"| {run.role} | `{run.run_dir}` | {run.checkpoint_text} | {run.data_text} |")
    return "\n".join(rows)


def serve_command(chat_run: str | Path, diffusion_run: str | Path | None = None,
                  view_run: str | Path | None = None) -> str:
    """The shell command that serves these runs (printed in reports next to their results)."""
    words = ["lit-medxchat", "serve", "--run-dir", str(chat_run)]
    if diffusion_run is not None:
        words += ["--diffusion-run", str(diffusion_run)]
    if view_run is not None:
        words += ["--view-run", str(view_run)]
    return shlex.join(words)
