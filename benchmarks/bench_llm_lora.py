"""Median training step of MedXChatLoRA (tiny options): Lightning `Trainer.fit` vs a plain PyTorch loop.

Both sides run the same module's `forward` (loss), AdamW and per-step LR scheduler on the same
fixed batch, one thread. Per-step CPU time (`time.process_time`, robust to other load on a shared
machine) is taken between consecutive step starts, so Lightning's hooks, logging and data
fetching are inside the Lightning figure. The two sides take turns over several rounds.

    python benchmarks/bench_llm_lora.py [--steps 40] [--rounds 3] [--batch-size 4] [--hidden 64 --layers 2]

`--hidden`/`--layers` resize the LLM of `tiny_options()` (64 x 2, the tiny config); 256 x 4 is the
size STACK-NOTES calls tiny (~0.1 s/step). Lightning's cost per step is roughly constant, so its
ratio shrinks as the step grows.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lit_medxchat.core.constants import XRAY_END, XRAY_START
from lit_medxchat.core.conversation import IGNORE_INDEX, SYSTEM_PROMPT, encode_conversation
from lit_medxchat.core.tokenizer import train_tokenizer
from lit_medxchat.models.llm_lora import MedXChatLoRA
from lit_medxchat.models.medxchat_options import tiny_options

NUM_IMAGE_TOKENS = 4
WARMUP_STEPS = 5
REPORT = "PA view of the chest was obtained. findings: small left pleural effusion. impression: effusion."
DIALOGUES = [
    (1, [{"role": "user", "content": "Write the report."}, {"role": "assistant", "content": REPORT}]),
    (2, [{"role": "user", "content": "Is there a pneumothorax?"}, {"role": "assistant", "content": "no"}]),
    (0, [{"role": "user", "content": "Draw a PA chest X-ray."},
         {"role": "assistant", "content": f"{XRAY_START} PA view of the chest was obtained. {XRAY_END}"}]),
]


def make_batch(tokenizer, batch_size: int) -> dict[str, torch.Tensor]:
    """A right-padded chat batch (docs/data-contracts.md §3) cycling through the three tasks."""
    rows = [DIALOGUES[i % len(DIALOGUES)] for i in range(batch_size)]
    encoded = [encode_conversation(tokenizer, turns, num_images=n, num_image_tokens=NUM_IMAGE_TOKENS, max_length=512)
               for n, turns in rows]
    length, pad = max(len(e.input_ids) for e in encoded), tokenizer.pad_token_id
    max_images = max(n for n, _ in rows)
    return {
        "input_ids": torch.tensor([e.input_ids + [pad] * (length - len(e.input_ids)) for e in encoded]),
        "attention_mask": torch.tensor([[1] * len(e.input_ids) + [0] * (length - len(e.input_ids)) for e in encoded]),
        "labels": torch.tensor([e.labels + [IGNORE_INDEX] * (length - len(e.labels)) for e in encoded]),
        "pixel_values": torch.randn(batch_size, max_images, 3, 64, 64, generator=torch.Generator().manual_seed(0)),
        "image_mask": torch.tensor([[i < n for i in range(max_images)] for n, _ in rows]),
    }


def build_model(tokenizer_dir: Path, hidden: int, layers: int) -> MedXChatLoRA:
    options = tiny_options(NUM_IMAGE_TOKENS)
    options["llm"].config.update(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers)
    torch.manual_seed(0)
    return MedXChatLoRA(str(tokenizer_dir), **options)


def plain_loop(tokenizer_dir: Path, batch: dict, steps: int, size: tuple[int, int]) -> list[float]:
    model = build_model(tokenizer_dir, *size).train()
    (optimizer,), schedulers = model.configure_optimizers()
    step_scheduler = schedulers[0]["scheduler"]
    loader = torch.utils.data.DataLoader([batch] * steps, batch_size=None)
    starts = []
    for item in loader:
        starts.append(time.process_time())
        loss = model(item)
        loss.backward()
        optimizer.step()
        step_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss.detach())  # Lightning reads the loss for its progress/logging too
    starts.append(time.process_time())
    return [b - a for a, b in zip(starts[WARMUP_STEPS:-1], starts[WARMUP_STEPS + 1 :], strict=True)]


def lightning_loop(tokenizer_dir: Path, batch: dict, steps: int, root: Path, size: tuple[int, int]) -> list[float]:
    import lightning.pytorch as pl

    class StepClock(pl.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            self.starts.append(time.process_time())

        def on_train_end(self, trainer, module) -> None:
            self.starts.append(time.process_time())

    model = build_model(tokenizer_dir, *size)
    clock = StepClock()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, default_root_dir=root,
                         callbacks=[clock])
    trainer.fit(model, torch.utils.data.DataLoader([batch] * steps, batch_size=None))
    starts = clock.starts
    return [b - a for a, b in zip(starts[WARMUP_STEPS:-1], starts[WARMUP_STEPS + 1 :], strict=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=64, help="LLM width (heads stay 4)")
    parser.add_argument("--layers", type=int, default=2, help="LLM decoder layers")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import logging
    import warnings

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tokenizer = train_tokenizer([SYSTEM_PROMPT, REPORT, "Human: AI: Is there a pneumothorax? no"] * 20, 1000,
                                    root / "tokenizer")
        batch = make_batch(tokenizer, args.batch_size)
        ours: list[float] = []
        base: list[float] = []
        for _ in range(args.rounds):
            size = (args.hidden, args.layers)
            base += plain_loop(root / "tokenizer", batch, args.steps, size)
            ours += lightning_loop(root / "tokenizer", batch, args.steps, root, size)
    med_ours, med_base = statistics.median(ours), statistics.median(base)
    shape = tuple(batch["input_ids"].shape)
    print(f"LLM {args.hidden} x {args.layers} layers, batch {shape} tokens, {args.rounds} rounds x "
          f"{args.steps - WARMUP_STEPS} timed steps per side, CPU time, 1 thread")
    print(f"plain PyTorch loop, median step: {med_base * 1e3:8.2f} ms")
    print(f"Lightning Trainer.fit, median:   {med_ours * 1e3:8.2f} ms")
    print(f"overhead ours / plain:           {med_ours / med_base:8.3f}x ({(med_ours - med_base) * 1e3:+.2f} ms/step)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
