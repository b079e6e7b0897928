"""Complete checkpoints only: a completion marker written last, verified before any resume.

A job killed while writing (preemption, OOM, node loss) leaves a checkpoint that looks fine to
`ls`: a ZeRO directory with one rank's shards, or a stale `last.ckpt` half overwritten. Lightning's
`--ckpt_path last` takes the newest file by modification time and would resume from it. Here every
checkpoint gets a sidecar `<name>.complete.json`, written atomically by global rank 0 *after* every
rank has finished writing, listing each file with its size and SHA-256. A checkpoint counts as
complete only when its marker exists and every listed file matches it; `last` resolves to the newest
complete checkpoint and says which newer ones it skipped and why.

Command line: `python -m lit_medxchat.training.checkpointing {verify,last,to-fp32} ...` (see `main`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)

MARKER_SUFFIX = ".complete.json"
MARKER_VERSION = 1
VERIFY_MODES = ("sha256", "size")
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
            "being written (or saved without lit_medxchat.training.checkpointing.CompleteCheckpoint). Resume from an "
            "earlier checkpoint, or, if you know it is whole, mark it with "
            f"`python -m lit_medxchat.training.checkpointing mark {given} --world-size N`."
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
        f"`python -m lit_medxchat.training.checkpointing to-fp32 {checkpoint} weights.ckpt` "
        f"(which `lit-medxchat export` "
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


RNG_KEY = "rng_states_per_rank"


def collect_rng_states() -> dict[str, Any]:
    """This process's RNG states: torch CPU, every CUDA device, numpy, Python `random`."""
    import random

    import numpy as np
    import torch

    # numpy's state as plain tensors/ints: checkpoints must load with torch.load(weights_only=True)
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                   "cached_gaussian": float(cached_gaussian)}
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Inverse of `collect_rng_states` (CUDA states only when this process has the same devices)."""
    import random

    import numpy as np
    import torch

    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def gather_rng_states(trainer: Any) -> list[dict[str, Any]]:
    """Every rank's RNG states, in rank order, on every rank (a collective: all ranks must call it)."""
    from lit_medxchat.core.distributed import gather_objects

    return gather_objects(collect_rng_states())


class CompleteCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` whose checkpoints carry a completion marker, and whose `last` skips incomplete ones.

    Same arguments as `ModelCheckpoint`, plus `verify` ("sha256" or "size": how resume checks files).
    Lightning restores weights, optimizer, scheduler, loop counters and a stateful loader's position, but
    not RNG states: this callback stores every rank's RNG states in the checkpoint and puts them back
    just before the first training batch after a resume (after the data iterator is rebuilt, which
    draws from the global RNG), so dropout and noise sampling continue exactly.
    It also checks, before any weight is loaded, that the checkpoint being resumed is complete and was
    written by the same number of ranks when it is ZeRO-sharded. `extra_marker_fields` is filled by
    other callbacks (the W&B run id) and stored in each marker.
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
        from lit_medxchat.training.wandb_run import checkpoint_fields

        checkpoint.update(checkpoint_fields(trainer))  # the W&B run id travels with the weights
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
        from lit_medxchat.training.wandb_run import checkpoint_fields

        self.extra_marker_fields.update(checkpoint_fields(trainer))
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


# ---------------------------------------------------------------- CLI helpers


def _config_checkpoint_dirs(config_files: list[str]) -> list[Path]:
    """Checkpoint folders a LightningCLI config implies: ModelCheckpoint dirpaths, then default_root_dir/checkpoints."""
    import yaml

    dirs: list[Path] = []
    for file in config_files:
        config = yaml.safe_load(Path(file).read_text()) or {}
        trainer = config.get("trainer") or {}
        callbacks = trainer.get("callbacks") or []
        for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
            if isinstance(callback, dict) and "Checkpoint" in str(callback.get("class_path", "")):
                dirpath = (callback.get("init_args") or {}).get("dirpath")
                if dirpath:
                    dirs.append(Path(dirpath))
        if trainer.get("default_root_dir"):
            dirs += _default_checkpoint_dirs(Path(trainer["default_root_dir"]))
    return dirs


def _default_checkpoint_dirs(root: Path) -> list[Path]:
    """Where Lightning puts checkpoints without a `dirpath`: ROOT/checkpoints, or a logger's ROOT/NAME/VERSION/."""
    return [root / "checkpoints", *sorted(root.glob("*/*/checkpoints"))]


def _option_value(argv: list[str], name: str) -> list[tuple[int, str]]:
    """(index of the value, value) for each `--name v` / `--name=v` in argv."""
    hits = []
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            hits.append((i + 1, argv[i + 1]))
        elif arg.startswith(name + "="):
            hits.append((i, arg.split("=", 1)[1]))
    return hits


def _announce_resume(checkpoint: str | Path) -> None:
    """Tell `ContinuingWandbLogger` (created later by LightningCLI) which checkpoint's W&B run to continue."""
    from lit_medxchat.training.wandb_run import RESUME_ENV

    os.environ[RESUME_ENV] = str(checkpoint)


def resolve_ckpt_path_args(argv: list[str]) -> list[str]:
    """Rewrite `--ckpt_path last` in a LightningCLI argv to the newest complete checkpoint of the run.

    The folder comes from `--trainer.default_root_dir` or the configs (ModelCheckpoint `dirpath`,
    `default_root_dir/checkpoints`). No complete checkpoint yet (first start of a requeued job): the
    option is dropped and training starts from scratch, which is said on stderr. An explicit path is
    verified here so a torn checkpoint fails before any process group starts.
    """
    hits = _option_value(argv, "--ckpt_path")
    if not hits:
        return argv
    index, value = hits[-1]
    argv = list(argv)
    if value != "last":
        if Path(value).exists():
            verify_explicit_checkpoint(value)
            _announce_resume(value)
        return argv
    dirs = [d for _, v in _option_value(argv, "--trainer.default_root_dir") for d in _default_checkpoint_dirs(Path(v))]
    dirs += _config_checkpoint_dirs([v for _, v in _option_value(argv, "--config") + _option_value(argv, "-c")])
    if not dirs:
        return argv  # Lightning resolves `last` itself through CompleteCheckpoint._find_last_checkpoints
    found: list[tuple[Path, dict]] = []
    for dirpath in dict.fromkeys(dirs):
        complete, skipped = complete_checkpoints(dirpath)
        found += complete
        for reason in skipped:
            log.warning("not resuming from an incomplete checkpoint: %s", reason)
    if found:
        newest = max(found, key=lambda item: (item[1]["global_step"], item[1]["written_at"]))[0]
        print(f"lit-medxchat: --ckpt_path last -> {newest}", file=sys.stderr)
        replacement = str(newest)
        _announce_resume(replacement)
    else:
        print(f"lit-medxchat: --ckpt_path last: no complete checkpoint in {', '.join(map(str, dirs))}; starting "
              "from scratch", file=sys.stderr)
        if argv[index].startswith("--ckpt_path="):
            del argv[index]
        else:
            del argv[index - 1 : index + 1]
        return argv
    if argv[index].startswith("--ckpt_path="):
        argv[index] = "--ckpt_path=" + replacement
    else:
        argv[index] = replacement
    return argv


def convert_zero_to_fp32(checkpoint: str | Path, output: str | Path, *, verify: str = "sha256") -> Path:
    """One fp32 Lightning-style file (`state_dict` of the trainable weights) from a ZeRO directory of any world size.

    Works for ZeRO-2 and ZeRO-3 shards from any number of ranks and nodes (the directory must hold all
    ranks' files, i.e. live on a shared file system). Refuses incomplete checkpoints.
    """
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise CheckpointError(f"{checkpoint} is not a DeepSpeed ZeRO checkpoint directory; it needs no conversion")
    if read_marker(checkpoint) is not None:
        verify_checkpoint(checkpoint, verify=verify)
    else:
        log.warning("%s has no completion marker; converting it anyway (DeepSpeed checks its own files)", checkpoint)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    convert_zero_checkpoint_to_fp32_state_dict(str(checkpoint), str(output))
    return output


def main(argv: list[str] | None = None) -> int:
    """`python -m lit_medxchat.training.checkpointing verify CKPT | last DIR | to-fp32 CKPT OUT | mark CKPT`."""
    parser = argparse.ArgumentParser(
        prog="python -m lit_medxchat.training.checkpointing", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("verify", help="check a checkpoint against its completion marker")
    p.add_argument("checkpoint")
    p.add_argument("--world-size", type=int, default=None)
    p.add_argument("--verify", choices=VERIFY_MODES, default="sha256")
    p = sub.add_parser("last", help="print the newest complete checkpoint of a folder")
    p.add_argument("dirpath")
    p = sub.add_parser("to-fp32", help="convert a ZeRO checkpoint directory to one fp32 file")
    p.add_argument("checkpoint")
    p.add_argument("output")
    p = sub.add_parser("mark", help="write a completion marker for a checkpoint you know is whole")
    p.add_argument("checkpoint")
    p.add_argument("--world-size", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "verify":
            marker = verify_checkpoint(args.checkpoint, verify=args.verify, world_size=args.world_size)
            print(f"complete: {args.checkpoint} (step {marker['global_step']}, {len(marker['files'])} files, "
                  f"world size {marker['world_size']}, ZeRO stage {marker['zero_stage']})")
        elif args.command == "last":
            newest = find_last_complete_checkpoint(args.dirpath)
            if newest is None:
                print(f"no complete checkpoint in {args.dirpath}", file=sys.stderr)
                return 1
            print(newest)
        elif args.command == "to-fp32":
            print(convert_zero_to_fp32(args.checkpoint, args.output))
        elif args.command == "mark":
            step = re.search(r"step=(\d+)", Path(args.checkpoint).name)
            epoch = re.search(r"epoch=(\d+)", Path(args.checkpoint).name)
            print(write_completion_marker(args.checkpoint, world_size=args.world_size,
                                          global_step=int(step.group(1)) if step else -1,
                                          epoch=int(epoch.group(1)) if epoch else -1))
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
