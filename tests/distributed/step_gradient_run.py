"""The chat model's gradient over one optimiser step of 4 micro-batches, split over ranks and accumulation.

Usage: step_gradient_run.py MODE TOKENIZER OUT_DIR, MODE one of
- `reference`: plain autograd, no Lightning: the summed token loss of all 4 micro-batches over their answer
  tokens (the gradient every split must give), and, to show the batches tell the two apart, the mean of the
  4 per-micro-batch means (what a loss normalised per micro-batch gives);
- `single`: Lightning, 1 process, `accumulate_grad_batches=4`;
- `ddp` / `zero2` (under torchrun, 2 ranks): rank r trains micro-batches 2r and 2r+1, `accumulate_grad_batches=2`.
Each Lightning run writes the trainable parameters' full gradients at `on_before_optimizer_step` (rank 0).
The micro-batches carry step totals from the shipped `StepTotals`, as `ChatDataModule`'s loader adds them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from datamodules.chat import ChatCollate
from datamodules.step_totals import StepTotals
from lit_medxchat.core.conversation import STEP_ANSWER_TOKENS, encode_conversation, supervised_tokens
from lit_medxchat.models.llm_lora import MedXChatLoRA
from lit_medxchat.models.medxchat_options import tiny_options

NUM_IMAGE_TOKENS = 4
# Micro-batches of very different answer lengths: long reports beside one-word answers.
REPORT = ("PA and lateral views of the chest were obtained. There is a small left pleural effusion with adjacent "
          "atelectasis. The heart size is normal. No pneumothorax. Impression: small left effusion.")
ANSWERS = [[REPORT, REPORT + " Mild edema."], ["no", "yes"], ["left lower lobe", REPORT], ["no", "small"]]


def micro_batches(tokenizer) -> list[dict]:
    collate = ChatCollate(int(tokenizer.pad_token_id), image_size=64, evaluation=False)
    generator = torch.Generator().manual_seed(3)
    batches = []
    for answers in ANSWERS:
        examples = []
        for answer in answers:
            turns = [{"role": "user", "content": "Describe this chest x-ray."},
                     {"role": "assistant", "content": answer}]
            encoded = encode_conversation(tokenizer, turns, num_images=1, num_image_tokens=NUM_IMAGE_TOKENS,
                                          max_length=256)
            examples.append({"input_ids": encoded.input_ids, "labels": encoded.labels, "task": "report", "key": "k",
                             "pixel_values": [torch.randn(3, 64, 64, generator=generator)]})
        batches.append(collate(examples))
    return batches


def build(tokenizer_dir: str) -> MedXChatLoRA:
    torch.manual_seed(0)
    return MedXChatLoRA(tokenizer_dir, **tiny_options(NUM_IMAGE_TOKENS))


def trainable_grads(model: torch.nn.Module, deepspeed_run: bool) -> dict[str, torch.Tensor]:
    grads = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if deepspeed_run:
            from deepspeed.utils import safe_get_full_grad

            grad = safe_get_full_grad(parameter)
        else:
            grad = parameter.grad
        grads[name] = grad.detach().float().clone() if grad is not None else torch.zeros_like(parameter).float()
    return grads


def reference(tokenizer_dir: str, out_dir: Path) -> None:
    model = build(tokenizer_dir)
    batches = micro_batches(model.tokenizer)
    total = sum(supervised_tokens(batch["labels"]) for batch in batches)
    model.zero_grad()
    for batch in batches:
        model(batch, torch.tensor(float(total))).backward()
    pooled = trainable_grads(model, False)
    model.zero_grad()
    for batch in batches:
        (model(batch) / len(batches)).backward()
    per_batch = trainable_grads(model, False)
    torch.save({"pooled": pooled, "per_batch_mean": per_batch}, out_dir / "reference.pt")


class SaveGradients(pl.Callback):
    def __init__(self, path: Path, deepspeed_run: bool) -> None:
        self.path, self.deepspeed_run = path, deepspeed_run

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # DeepSpeed handles accumulation itself: Lightning calls this after every micro-batch's backward.
        if self.deepspeed_run and not trainer.model.is_gradient_accumulation_boundary():
            return
        grads = trainable_grads(pl_module, self.deepspeed_run)  # collective under ZeRO: every rank gathers
        if trainer.is_global_zero:
            torch.save(grads, self.path)


def lightning_run(mode: str, tokenizer_dir: str, out_dir: Path) -> None:
    world = 1 if mode == "single" else 2
    accumulate = 4 // world
    model = build(tokenizer_dir)
    batches = micro_batches(model.tokenizer)
    if mode == "zero2":
        from lit_medxchat.training.strategies import ZeroStrategy

        strategy = ZeroStrategy(config={"zero_optimization": {"stage": 2}, "zero_allow_untested_optimizer": True,
                                        "train_micro_batch_size_per_gpu": 2})
    else:
        strategy = "ddp" if mode == "ddp" else "auto"
    trainer = pl.Trainer(accelerator="cpu", devices=world, strategy=strategy, max_steps=1, default_root_dir=out_dir,
                         accumulate_grad_batches=accumulate, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                         callbacks=[SaveGradients(out_dir / f"{mode}.pt", mode == "zero2")])
    rank = int(trainer.global_rank)
    mine = batches[rank * accumulate : (rank + 1) * accumulate]
    totals = StepTotals(STEP_ANSWER_TOKENS, lambda batch: supervised_tokens(batch["labels"]), accumulate)
    annotated = [batch for batch, _ in totals.annotate(iter([(batch, None) for batch in mine]), start=0)]
    loader = torch.utils.data.DataLoader(annotated, batch_size=None, collate_fn=as_is)
    trainer.fit(model, train_dataloaders=loader)


def as_is(batch: dict) -> dict:
    return batch


def main() -> None:
    torch.set_num_threads(1)
    mode, tokenizer_dir, out_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    if mode == "reference":
        reference(tokenizer_dir, out_dir)
    else:
        lightning_run(mode, tokenizer_dir, out_dir)


if __name__ == "__main__":
    main()
