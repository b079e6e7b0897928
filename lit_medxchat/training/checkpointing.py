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
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

from lit_medxchat.training.completion import (  # noqa: F401 - names other modules still import from here
    MARKER_SUFFIX,
    VERIFY_MODES,
    CheckpointError,
    IncompleteCheckpointError,
    WorldSizeMismatchError,
    check_world_size,
    checkpoint_files,
    complete_checkpoints,
    find_last_complete_checkpoint,
    marker_path,
    read_marker,
    verify_checkpoint,
    verify_explicit_checkpoint,
    write_completion_marker,
)

log = logging.getLogger(__name__)

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
