"""`--ckpt_path last` on a LightningCLI command line: the newest *complete* checkpoint, found before Lightning starts.

Lightning resolves `last` to the newest file by modification time, which after a kill while saving is a
torn checkpoint. Rewriting the argv here, before any process group starts, lets a requeued job resume
from the newest checkpoint whose completion marker checks out, start from scratch when there is none
yet, and fail early (naming the file) when an explicitly given checkpoint is corrupt.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from lit_medxchat.training.completion import complete_checkpoints, verify_explicit_checkpoint

log = logging.getLogger(__name__)


def config_checkpoint_dirs(config_files: list[str]) -> list[Path]:
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
            dirs += default_checkpoint_dirs(Path(trainer["default_root_dir"]))
    return dirs


def default_checkpoint_dirs(root: Path) -> list[Path]:
    """Where Lightning puts checkpoints without a `dirpath`: ROOT/checkpoints, or a logger's ROOT/NAME/VERSION/."""
    return [root / "checkpoints", *sorted(root.glob("*/*/checkpoints"))]


def option_values(argv: list[str], name: str) -> list[tuple[int, str]]:
    """(index of the value, value) for each `--name v` / `--name=v` in argv."""
    hits = []
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            hits.append((i + 1, argv[i + 1]))
        elif arg.startswith(name + "="):
            hits.append((i, arg.split("=", 1)[1]))
    return hits


def _newest_complete(dirs: list[Path]) -> Path | None:
    found = []
    for dirpath in dict.fromkeys(dirs):
        complete, skipped = complete_checkpoints(dirpath)
        found += complete
        for reason in skipped:
            log.warning("not resuming from an incomplete checkpoint: %s", reason)
    if not found:
        return None
    return max(found, key=lambda item: (item[1]["global_step"], item[1]["written_at"]))[0]


def resolve_ckpt_path_args(argv: list[str]) -> list[str]:
    """Rewrite `--ckpt_path last` in a LightningCLI argv to the newest complete checkpoint of the run.

    The folder comes from `--trainer.default_root_dir` or the configs (ModelCheckpoint `dirpath`,
    `default_root_dir/checkpoints`). No complete checkpoint yet (first start of a requeued job): the
    option is dropped and training starts from scratch, which is said on stderr. An explicit path is
    verified here so a torn checkpoint fails before any process group starts. Returns a new list; the
    W&B logger learns the checkpoint from the parsed `ckpt_path` (see `lit_medxchat.training.cli`).
    """
    hits = option_values(argv, "--ckpt_path")
    if not hits:
        return argv
    index, value = hits[-1]
    argv = list(argv)
    if value != "last":
        if Path(value).exists():
            verify_explicit_checkpoint(value)
        return argv
    dirs = [d for _, v in option_values(argv, "--trainer.default_root_dir") for d in default_checkpoint_dirs(Path(v))]
    dirs += config_checkpoint_dirs([v for _, v in option_values(argv, "--config") + option_values(argv, "-c")])
    if not dirs:
        return argv  # Lightning resolves `last` itself through CompleteCheckpoint._find_last_checkpoints
    newest = _newest_complete(dirs)
    if newest is None:
        print(f"lit-medxchat: --ckpt_path last: no complete checkpoint in {', '.join(map(str, dirs))}; starting "
              "from scratch", file=sys.stderr)
        if argv[index].startswith("--ckpt_path="):
            del argv[index]
        else:
            del argv[index - 1 : index + 1]
        return argv
    print(f"lit-medxchat: --ckpt_path last -> {newest}", file=sys.stderr)
    argv[index] = f"--ckpt_path={newest}" if argv[index].startswith("--ckpt_path=") else str(newest)
    return argv
