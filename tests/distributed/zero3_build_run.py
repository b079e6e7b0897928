"""Two ranks build the chat core from pretrained folders inside `zero3_build` (what `ZeroStrategy` opens around
`configure_model` under ZeRO-3), and once whole, and record what each holds and whether the two builds agree.

The folders are what the paper config points `llm.name_or_path` / `vision.name_or_path` at, at tiny sizes.
Usage (under torchrun): zero3_build_run.py TOKENIZER LLM_DIR VISION_DIR OUT_DIR
"""

from __future__ import annotations

import faulthandler
import json
import sys

import deepspeed
import torch

from lit_medxchat.models.checkpoint_io import frozen_keys, state_fingerprint
from lit_medxchat.models.medxchat import MedXChatModel
from lit_medxchat.models.medxchat_options import (
    AdapterOptions,
    LLMOptions,
    LoRAOptions,
    VisionOptions,
    core_options,
    tiny_options,
)
from lit_medxchat.models.zero3_build import built_parameter_bytes, zero3_build

HANG_TIMEOUT_S = 180
ZERO3 = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 3}, "zero_allow_untested_optimizer": True}


def build(tokenizer: str, llm_dir: str, vision_dir: str) -> MedXChatModel:
    return MedXChatModel(
        tokenizer,
        vision=VisionOptions(name_or_path=vision_dir),
        adapter=AdapterOptions(num_image_tokens=4, hidden_size=32, num_layers=1, num_heads=2),
        llm=LLMOptions(name_or_path=llm_dir),
        lora=LoRAOptions(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]),
    )


def trainable_values(model: MedXChatModel) -> dict[str, list[float]]:
    """The trainable tensors right after the build (LoRA A/B, token rows, adapter), as lists, for comparison."""
    return {name: parameter.detach().flatten().tolist() for name, parameter in model.named_parameters()
            if parameter.requires_grad}


def main() -> None:
    faulthandler.dump_traceback_later(HANG_TIMEOUT_S, exit=True)
    tokenizer, llm_dir, vision_dir, out_dir = sys.argv[1:5]
    torch.set_num_threads(1)
    deepspeed.init_distributed("gloo")
    rank = torch.distributed.get_rank()
    with zero3_build(ZERO3):
        partitioned = build(tokenizer, llm_dir, vision_dir)
    held = built_parameter_bytes(partitioned)
    whole = build(tokenizer, llm_dir, vision_dir)
    frozen = sorted(frozen_keys(whole))
    result = {
        "rank": rank,
        "bytes": held,
        "partitioned_frozen": sum(hasattr(p, "ds_id") for p in partitioned.parameters() if not p.requires_grad),
        "frozen": sum(1 for p in partitioned.parameters() if not p.requires_grad),
        "trainable_partitioned": sum(hasattr(p, "ds_id") for p in partitioned.parameters() if p.requires_grad),
        "fingerprints": [partitioned.frozen_fingerprint(),
                         state_fingerprint(whole.state_dict(keep_vars=True), set(frozen))],
        "trainable_equal": trainable_values(partitioned) == trainable_values(whole),
        "lora_b_zero": all(float(p.abs().max()) == 0.0 for n, p in partitioned.named_parameters() if "lora_B" in n),
    }
    # random bases (a config, no folder): built whole under the same seed, then partitioned
    with zero3_build(ZERO3):
        random_partitioned = MedXChatModel(tokenizer, **core_options(tiny_options()))
    random_whole = MedXChatModel(tokenizer, **core_options(tiny_options()))
    result["random"] = {
        "bytes": built_parameter_bytes(random_partitioned),
        "fingerprints": [random_partitioned.frozen_fingerprint(), random_whole.frozen_fingerprint()],
        "trainable_equal": trainable_values(random_partitioned) == trainable_values(random_whole),
    }
    with open(f"{out_dir}/build{rank}.json", "w") as handle:
        json.dump(result, handle)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
