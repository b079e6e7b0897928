"""Complete checkpoints only: a completion marker written last, verified before anything reads the checkpoint.

A job killed while writing (preemption, OOM, node loss) leaves a checkpoint that looks fine to
`ls`: a ZeRO directory with one rank's shards, or a stale `last.ckpt` half overwritten. Lightning's
`--ckpt_path last` takes the newest file by modification time and would resume from it. Here every
checkpoint gets a sidecar `<name>.complete.json`, written atomically by global rank 0 *after* every
rank has finished writing, listing each file with its size and SHA-256. A checkpoint counts as
complete only when its marker exists and every listed file matches it; `last` resolves to the newest
complete checkpoint and says which newer ones it skipped and why.

This module reads and writes markers only (json, hashlib, pathlib): inference, serving and the
resume plumbing use it without importing Lightning. The callback that writes markers during
training is `lit_medxchat.training.checkpoint_callback.CompleteCheckpoint`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MARKER_SUFFIX = ".complete.json"
MARKER_VERSION = 1
VERIFY_MODES = ("sha256", "size")
CHECKPOINTS_CLI = "python -m lit_medxchat.training.checkpointing"
_HASH_CHUNK = 8 << 20


class CheckpointError(RuntimeError):
    """A checkpoint cannot be resumed from; the message names the checkpoint, the file and the fix."""


class IncompleteCheckpointError(CheckpointError):
    """Missing marker, missing file, or a file whose size/hash differs from the marker."""


class WorldSizeMismatchError(CheckpointError):
    """A ZeRO-sharded checkpoint resumed with another number of ranks than wrote it."""


def marker_path(checkpoint: str | Path) -> Path:
    """The sidecar marker of a checkpoint file or directory (`epoch=0-step=8.ckpt.complete.json`)."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + MARKER_SUFFIX)


def checkpoint_files(checkpoint: str | Path) -> list[Path]:
    """Every file of a checkpoint: itself for a file, all files below it for a (ZeRO) directory."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_file():
        return [checkpoint]
    return sorted(p for p in checkpoint.rglob("*") if p.is_file())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _zero_stage(checkpoint: Path) -> int | None:
    """ZeRO stage from DeepSpeed's shard names (None for a plain Lightning file)."""
    if checkpoint.is_file():
        return None
    names = [p.name for p in checkpoint.rglob("*.pt")]
    if any(n.startswith("zero_pp_rank_") and n.endswith("_model_states.pt") for n in names):
        return 3
    if any("optim_states" in n for n in names):
        return 2 if any(n.startswith("bf16_zero_pp_rank_") or n.startswith("zero_pp_rank_") for n in names) else 1
    return 0


def write_completion_marker(checkpoint: str | Path, *, world_size: int, global_step: int, epoch: int,
                            extra: dict[str, Any] | None = None, hash_files: bool = True) -> Path:
    """Record `checkpoint` as complete. Call on one process, after *all* ranks finished writing it.

    The marker is written to a temporary name, fsynced and renamed, so it is either absent or whole.
    `extra` is stored as is (we keep the W&B run id there, so a resume can find it without loading tensors).
    """
    checkpoint = Path(checkpoint)
    root = checkpoint if checkpoint.is_dir() else checkpoint.parent
    files = []
    for path in checkpoint_files(checkpoint):
        entry: dict[str, Any] = {"path": str(path.relative_to(root)) if checkpoint.is_dir() else path.name,
                                 "size": path.stat().st_size}
        if hash_files:
            entry["sha256"] = _sha256(path)
        files.append(entry)
    if not files:
        raise IncompleteCheckpointError(f"checkpoint {checkpoint} holds no file; nothing to mark complete")
    marker = {
        "version": MARKER_VERSION,
        "checkpoint": checkpoint.name,
        "kind": "directory" if checkpoint.is_dir() else "file",
        "zero_stage": _zero_stage(checkpoint),
        "world_size": world_size,
        "global_step": global_step,
        "epoch": epoch,
        "written_at": time.time(),
        "files": files,
        "extra": extra or {},
    }
    target = marker_path(checkpoint)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    with tmp.open("w") as handle:
        json.dump(marker, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    return target


def read_marker(checkpoint: str | Path) -> dict[str, Any] | None:
    """The marker's content, or None when the checkpoint has none (incomplete, or not written by us)."""
    path = marker_path(Path(checkpoint).resolve())
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise IncompleteCheckpointError(f"completion marker {path} is not valid JSON ({error}); delete it") from error


def verify_checkpoint(checkpoint: str | Path, *, verify: str = "sha256", world_size: int | None = None) -> dict:
    """Check a checkpoint against its marker and return the marker; raise naming the offending file.

    `verify="size"` skips hashing (for multi-GB checkpoints on slow file systems). `world_size`, when
    given, must equal the writer's for ZeRO-sharded checkpoints: their optimizer shards are per rank.
    """
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify={verify!r}: choose one of {VERIFY_MODES}")
    given = Path(checkpoint)
    checkpoint = given.resolve()  # `save_last="link"` makes last.ckpt a symlink to a complete checkpoint
    if not checkpoint.exists():
        raise IncompleteCheckpointError(f"checkpoint {given} does not exist")
    marker = read_marker(checkpoint)
    if marker is None:
        raise IncompleteCheckpointError(
            f"checkpoint {given} has no completion marker {marker_path(checkpoint).name}: it was interrupted while "
            "being written (or saved without lit_medxchat.training.checkpoint_callback.CompleteCheckpoint). Resume "
            "from an earlier checkpoint, or, if you know it is whole, mark it with "
            f"`{CHECKPOINTS_CLI} mark {given} --world-size N`."
        )
    root = checkpoint if checkpoint.is_dir() else checkpoint.parent
    for entry in marker["files"]:
        path = root / entry["path"]
        if not path.is_file():
            raise IncompleteCheckpointError(f"checkpoint {given}: file {path} is missing (listed in its marker)")
        size = path.stat().st_size
        if size != entry["size"]:
            raise IncompleteCheckpointError(
                f"checkpoint {given}: file {path} has {size} bytes, its marker says {entry['size']} (truncated "
                "or overwritten)"
            )
        if verify == "sha256" and "sha256" in entry and _sha256(path) != entry["sha256"]:
            raise IncompleteCheckpointError(f"checkpoint {given}: file {path} is corrupt (SHA-256 differs from marker)")
    if world_size is not None:
        check_world_size(given, marker, world_size)
    return marker


def check_world_size(checkpoint: str | Path, marker: dict, world_size: int) -> None:
    """ZeRO shards are tied to the writer's world size; say so, and name the converter, before DeepSpeed fails."""
    written = marker.get("world_size")
    stage = marker.get("zero_stage")
    if written == world_size:
        return
    if stage is None:
        log.warning(
            "checkpoint %s was written by %s ranks, this run has %s: weights, optimizer and counters resume "
            "exactly, the per-rank data order does not.", checkpoint, written, world_size,
        )
        return
    raise WorldSizeMismatchError(
        f"checkpoint {checkpoint} is a DeepSpeed ZeRO stage-{stage} checkpoint written by {written} ranks; this run "
        f"has {world_size}. Sharded optimizer states resume only with the same world size: relaunch with "
        f"{written} ranks (devices x num_nodes), or convert the weights to one fp32 file with "
        f"`{CHECKPOINTS_CLI} to-fp32 {checkpoint} weights.ckpt` (which `lit-medxchat export` "
        "reads) and start a new run from those weights (the optimizer state is not carried over)."
    )


def verify_explicit_checkpoint(checkpoint: str | Path, *, verify: str = "sha256",
                               world_size: int | None = None) -> None:
    """A checkpoint the user named: verified when it has a marker; without one (e.g. written by a plain
    `ModelCheckpoint` or another tool) it is used as asked, with a warning, since we cannot tell if it is whole."""
    if read_marker(checkpoint) is None:
        if not Path(checkpoint).exists():
            raise IncompleteCheckpointError(f"checkpoint {checkpoint} does not exist")
        log.warning("checkpoint %s has no completion marker: resuming from it as asked, but nothing proves it was "
                    "written completely (a kill while saving leaves no marker)", checkpoint)
        return
    verify_checkpoint(checkpoint, verify=verify, world_size=world_size)


def complete_checkpoints(dirpath: str | Path, *, verify: str = "sha256") -> tuple[list[tuple[Path, dict]], list[str]]:
    """All complete checkpoints in `dirpath`, newest first, and one reason line per checkpoint skipped."""
    dirpath = Path(dirpath)
    found: list[tuple[Path, dict]] = []
    skipped: list[str] = []
    if not dirpath.is_dir():
        return found, skipped
    for entry in sorted(dirpath.iterdir()):
        if not entry.name.endswith(".ckpt"):
            continue
        try:
            found.append((entry, verify_checkpoint(entry, verify=verify)))
        except IncompleteCheckpointError as error:
            skipped.append(str(error))
    found.sort(key=lambda item: (item[1]["global_step"], item[1]["written_at"]), reverse=True)
    return found, skipped


def find_last_complete_checkpoint(dirpath: str | Path, *, verify: str = "sha256") -> Path | None:
    """The newest complete checkpoint in `dirpath` (None if there is none); warns about each newer one skipped."""
    found, skipped = complete_checkpoints(dirpath, verify=verify)
    newest_step = found[0][1]["global_step"] if found else -1
    for reason in skipped:
        log.warning("not resuming from an incomplete checkpoint: %s", reason)
    if skipped and found:
        log.warning("resuming from %s (step %d), the newest complete checkpoint", found[0][0], newest_step)
    return found[0][0] if found else None


def newest_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint to load from a run folder: the newest complete `RUN/checkpoints/*.ckpt`.

    Newest by completion marker when any checkpoint has one; otherwise (checkpoints written by a plain
    `ModelCheckpoint` or copied in by hand) the newest file by modification time, since nothing tells
    complete from torn. Raises FileNotFoundError when the folder holds no `*.ckpt`.
    """
    folder = Path(run_dir) / "checkpoints"
    candidates = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(f"{folder} holds no *.ckpt: train the run first (`lit-medxchat fit --config ...`).")
    if any(marker_path(p).exists() for p in candidates):
        complete = find_last_complete_checkpoint(folder)
        if complete is not None:
            return complete
    return candidates[-1]
