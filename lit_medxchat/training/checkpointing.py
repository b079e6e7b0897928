"""`python -m lit_medxchat.training.checkpointing {verify,last,mark,to-fp32}`: checkpoints from the shell.

Which checkpoint of a run folder is complete, marking one you know is whole, and converting a DeepSpeed
ZeRO directory (any world size) to one fp32 file. Where each job lives:

- `lit_medxchat.training.completion`: completion markers and their checks (no Lightning).
- `lit_medxchat.training.checkpoint_callback`: `CompleteCheckpoint`, the callback that writes them.
- `lit_medxchat.training.rng_state`: every rank's RNG states, saved with each checkpoint.
- `lit_medxchat.training.resume_args`: `--ckpt_path last` on a LightningCLI command line.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from lit_medxchat.training.completion import (
    VERIFY_MODES,
    CheckpointError,
    find_last_complete_checkpoint,
    read_marker,
    verify_checkpoint,
    write_completion_marker,
)

log = logging.getLogger(__name__)


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


def build_parser() -> argparse.ArgumentParser:
    """The `verify | last | to-fp32 | mark` sub-commands and their options."""
    parser = argparse.ArgumentParser(
        prog="python -m lit_medxchat.training.checkpointing", description="Verify, find, mark and convert checkpoints."
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m lit_medxchat.training.checkpointing verify CKPT | last DIR | to-fp32 CKPT OUT | mark CKPT`.

    Exit status: 0 done, 1 no complete checkpoint (`last`), 2 a checkpoint error (printed on stderr).
    """
    parser = build_parser()
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
