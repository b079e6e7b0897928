"""`lit-medxchat chat`: one question to a trained MedXChat run, from the command line.

    lit-medxchat chat --run-dir runs/chat --sd-run-dir runs/sd --image cxr.jpg "Write the report."
    lit-medxchat chat --run-dir runs/chat --sd-run-dir runs/sd --out drawn/ "Draw a lateral CXR with an effusion."

Prints the answer; CXRs drawn for `<Xray> ... </Xray>` prompts are written to `--out` as PNGs
and their paths printed. Exit code 0 on success, 2 on bad arguments, missing files, or checkpoints
that are refused (pickled objects, a class that is not ours, weights of another configuration).
The chat model and CXR-SD are loaded as plain cores: no Lightning is imported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lit-medxchat chat", description=__doc__.split("\n\n")[0])
    parser.add_argument("instruction", help="the question or request, e.g. 'Write the report for this X-ray.'")
    parser.add_argument("--run-dir", type=Path, required=True, help="chat run folder (checkpoints/, tokenizer/)")
    parser.add_argument("--sd-run-dir", type=Path, default=None, help="CXR-SD run folder, to draw <Xray> prompts")
    parser.add_argument("--image", type=Path, action="append", default=[],
                        help="a CXR file; repeat for a frontal + lateral pair (at most 2)")
    parser.add_argument("--out", type=Path, default=Path("medxchat-images"), help="folder for drawn CXRs")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="answer length limit (tokens)")
    parser.add_argument("--num-beams", type=int, default=None, help="beam width (1 = greedy)")
    parser.add_argument("--steps", type=int, default=20, help="diffusion sampling steps")
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="classifier-free guidance scale")
    parser.add_argument("--seed", type=int, default=0, help="seed of the drawn CXRs' noise")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu", help="torch device")
    return parser


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if len(args.image) > 2:
        print(f"lit-medxchat chat: {len(args.image)} --image given; MedXChat takes 1 or 2 (frontal, lateral)",
              file=sys.stderr)
        return 2
    missing = [str(p) for p in args.image if not p.is_file()]
    if missing:
        print(f"lit-medxchat chat: image file(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    from lit_medxchat.core.checkpoint_files import UnsafeCheckpointError
    from lit_medxchat.inference.pipeline import MedXChatPipeline
    from lit_medxchat.models.checkpoint_io import CheckpointMismatchError
    from lit_medxchat.models.registry import UnknownModelError

    try:
        pipeline = MedXChatPipeline.from_run_dirs(
            args.run_dir, args.sd_run_dir, device=args.device, num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale, seed=args.seed,
        )
    except (FileNotFoundError, UnsafeCheckpointError, UnknownModelError, CheckpointMismatchError) as error:
        print(f"lit-medxchat chat: {error}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in (("max_new_tokens", args.max_new_tokens), ("num_beams", args.num_beams))
                 if v is not None}
    response = pipeline(args.instruction, images=[str(p) for p in args.image], **overrides)
    print(response.answer)
    for warning in response.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for path in response.save_images(args.out):
        print(f"image: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
