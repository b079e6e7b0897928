"""Two ranks, the chat core under DeepSpeed ZeRO-3 with every parameter partitioned, decoding different lengths.

Also records the frozen-weights fingerprint before partitioning and after (gathered): a checkpoint of a ZeRO-3 run
must carry the fingerprint of the real weights. Rank 0 asks for 1 new token, rank 1 for 6; rank 0's batch has no
image, rank 1's has two. Each rank decodes with the HF decoder (`image_contrast` 0) and with the image-contrastive
one, then runs a teacher-forced forward. Without synced decoding rank 1 waits for ever in an all-gather that rank 0
never joins; `faulthandler` then prints both ranks' stacks and exits after HANG_TIMEOUT_S.
Usage (under torchrun): zero3_generate_run.py TOKENIZER OUT_DIR
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import time

import deepspeed
import torch

from lit_medxchat.core.conversation import encode_prompt
from lit_medxchat.core.distributed import parameters_partitioned
from lit_medxchat.models.checkpoint_io import frozen_keys, state_fingerprint
from lit_medxchat.models.medxchat import MedXChatModel
from lit_medxchat.models.medxchat_options import core_options, tiny_options

HANG_TIMEOUT_S = 180
NUM_IMAGE_TOKENS = 4


def prompts(model: MedXChatModel, num_images: int) -> dict[str, torch.Tensor]:
    turns = [{"role": "user", "content": "Generate a report of this chest x-ray."}]
    encoded = [encode_prompt(model.tokenizer, turns, num_images=num_images, num_image_tokens=NUM_IMAGE_TOKENS,
                             max_length=256) for _ in range(2)]
    length = max(map(len, encoded))
    pad = model.tokenizer.pad_token_id
    batch = {
        "prompt_input_ids": torch.tensor([[pad] * (length - len(p)) + p for p in encoded]),
        "prompt_attention_mask": torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in encoded]),
    }
    if num_images:
        batch["pixel_values"] = torch.randn(2, num_images, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        batch["image_mask"] = torch.ones(2, num_images, dtype=torch.bool)
    return batch


class Answering(torch.nn.Module):
    """What Lightning hands DeepSpeed: a module whose forward runs the step, here decoding. DeepSpeed gathers a
    parameter that a module reads outside its own forward (peft's trainable token rows) only inside the engine's
    forward, so decoding is called through the engine, as Lightning's validation step is."""

    def __init__(self, core: MedXChatModel) -> None:
        super().__init__()
        self.core = core

    def forward(self, batch: dict[str, torch.Tensor], max_new_tokens: int, contrast: float) -> list[str]:
        return self.core.generate(batch["prompt_input_ids"], batch["prompt_attention_mask"], batch.get("pixel_values"),
                                  batch.get("image_mask"), max_new_tokens=max_new_tokens, image_contrast=contrast)


def main() -> None:
    faulthandler.dump_traceback_later(HANG_TIMEOUT_S, exit=True)
    tokenizer, out_dir = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    cuda = torch.cuda.is_available()  # also run by benchmarks/gpu_check.py on 2 GPUs (NCCL)
    deepspeed.init_distributed("nccl" if cuda else "gloo")
    rank = torch.distributed.get_rank()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(0)
    model = MedXChatModel(tokenizer, **core_options(tiny_options(NUM_IMAGE_TOKENS)))
    whole_fingerprint = state_fingerprint(model.state_dict(keep_vars=True), frozen_keys(model))  # not cached
    config = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 3,
              "stage3_param_persistence_threshold": 0}, "zero_allow_untested_optimizer": True}
    trainable = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=Answering(model), model_parameters=trainable, config=config,
                                      optimizer=torch.optim.AdamW(trainable, lr=1e-3), dist_init_required=False)
    engine.eval()
    batch = {key: value.to(device) for key, value in prompts(model, num_images=0 if rank == 0 else 2).items()}
    started = time.perf_counter()
    max_new_tokens = 1 if rank == 0 else 6
    answers = {str(contrast): engine(batch, max_new_tokens, contrast) for contrast in (0.0, 1.0)}
    lengths = {key: [len(model.tokenizer(text, add_special_tokens=False).input_ids) for text in texts]
               for key, texts in answers.items()}
    result = {"rank": rank, "partitioned": parameters_partitioned(model), "lengths": lengths,
              "fingerprints": [whole_fingerprint, model.frozen_fingerprint()], "device": str(device),
              "decode_seconds": time.perf_counter() - started}
    with open(f"{out_dir}/rank{rank}.json", "w") as handle:
        json.dump(result, handle)
    del engine
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
