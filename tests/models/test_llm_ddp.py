"""MedXChatLoRA trains under `strategy="ddp"` on 2 CPU processes (a subprocess script, gloo).

Rank 0 gets text-to-CXR batches without any image while rank 1 gets batches with images: DDP
must still see a gradient for every trainable parameter on both ranks, and the replicas must
end identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from lit_medxchat.core.constants import XRAY_END, XRAY_START
from lit_medxchat.core.conversation import SYSTEM_PROMPT
from lit_medxchat.core.tokenizer import train_tokenizer

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import lightning.pytorch as pl
    import torch
    from lit_medxchat.core.conversation import IGNORE_INDEX, encode_conversation, encode_prompt
    from lit_medxchat.models.llm_lora import MedXChatLoRA
    from lit_medxchat.models.medxchat_options import tiny_options
    from callbacks.image_dependence import ImageDependence
    from lit_medxchat.training.rank_seed import PerRankSeed

    tokenizer_dir, out_dir = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    T = 4
    REPORT = [{"role": "user", "content": "Describe the X-ray."},
              {"role": "assistant", "content": "findings: small left pleural effusion."}]
    DRAW = [{"role": "user", "content": "Draw a chest X-ray."},
            {"role": "assistant", "content": "<Xray> PA view of the chest was obtained. </Xray>"}]

    def batch(tok, dialogues, seed):
        enc = [encode_conversation(tok, d, num_images=n, num_image_tokens=T, max_length=256) for n, d in dialogues]
        prm = [encode_prompt(tok, d[:-1], num_images=n, num_image_tokens=T, max_length=256) for n, d in dialogues]
        L, P, pad = max(len(e.input_ids) for e in enc), max(map(len, prm)), tok.pad_token_id
        N = max(1, max(n for n, _ in dialogues))
        return {
            "input_ids": torch.tensor([e.input_ids + [pad] * (L - len(e.input_ids)) for e in enc]),
            "attention_mask": torch.tensor([[1] * len(e.input_ids) + [0] * (L - len(e.input_ids)) for e in enc]),
            "labels": torch.tensor([e.labels + [IGNORE_INDEX] * (L - len(e.labels)) for e in enc]),
            "pixel_values": torch.randn(len(dialogues), N, 3, 64, 64, generator=torch.Generator().manual_seed(seed)),
            "image_mask": torch.tensor([[i < n for i in range(N)] for n, _ in dialogues]),
            "prompt_input_ids": torch.tensor([[pad] * (P - len(p)) + p for p in prm]),
            "prompt_attention_mask": torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prm]),
            "references": [d[-1]["content"] for _, d in dialogues],
            "tasks": ["report" if n else "t2i" for n, _ in dialogues],
            "meta": [{} for _ in dialogues],
        }

    model = MedXChatLoRA(tokenizer_dir, **tiny_options(T))
    tok = model.tokenizer
    # DistributedSampler without shuffling: even indices -> rank 0 (no image at all), odd -> rank 1.
    train = [batch(tok, [(0, DRAW), (0, DRAW)] if i % 2 == 0 else [(1, REPORT), (2, REPORT)], i) for i in range(8)]
    # Validation: rank 0's batch has no image, rank 1's has one (ImageDependence must not leave rank 1 waiting).
    val = [batch(tok, [(0, DRAW), (0, DRAW)], 100), batch(tok, [(1, REPORT), (0, DRAW)], 101)]

    class Outputs(pl.Callback):
        def __init__(self):
            self.predictions = []
        def on_train_start(self, trainer, module):
            self.train_seed = torch.initial_seed()
        def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
            self.predictions += outputs["predictions"]

    outputs = Outputs()
    trainer = pl.Trainer(accelerator="cpu", strategy="ddp", devices=2, max_epochs=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=out_dir,
                         num_sanity_val_steps=0,
                         callbacks=[outputs, ImageDependence(), PerRankSeed(seed=7),
                                    pl.callbacks.ModelCheckpoint(dirpath=out_dir + "/checkpoints")])
    loader = lambda data: torch.utils.data.DataLoader(data, batch_size=None)
    trainer.fit(model, loader(train), loader(val))
    trainable = torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])
    result = {"rank": trainer.global_rank, "steps": trainer.global_step, "checksum": float(trainable.double().sum()),
              "val_loss": float(trainer.callback_metrics["val/loss"]), "predictions": outputs.predictions,
              "image_loss_gap": float(trainer.callback_metrics["val/image_loss_gap"]), "train_seed": outputs.train_seed}
    with open(f"{out_dir}/rank{trainer.global_rank}.json", "w") as handle:
        json.dump(result, handle)
    torch.distributed.destroy_process_group()
    """
)


def test_two_process_ddp_trains_and_keeps_replicas_identical(tmp_path):
    import torch

    tok = tmp_path / "tokenizer"
    train_tokenizer([SYSTEM_PROMPT, f"{XRAY_START} PA view of the chest was obtained. {XRAY_END}",
                     "Human: Describe the X-ray. AI: findings: small left pleural effusion."] * 10, 1000, tok)
    script = tmp_path / "ddp_llm.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    run = subprocess.run([sys.executable, str(script), str(tok), str(tmp_path)], env=env, capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["steps"] for r in ranks] == [4, 4]  # 8 batches over 2 ranks
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # gradients were all-reduced
    assert ranks[0]["val_loss"] == ranks[1]["val_loss"]  # one weighted mean over both ranks' answer tokens
    # ImageDependence with an image-free batch on rank 0: both ranks log the gap of rank 1's images, no hang.
    assert ranks[0]["image_loss_gap"] == ranks[1]["image_loss_gap"]
    # Same weights on both ranks (the all-reduce above), yet each rank draws from its own stream (dropout masks).
    assert [r["train_seed"] for r in ranks] == [7, 8]
    assert all(len(r["predictions"]) == 2 for r in ranks)  # each rank generated for its validation batch
    (checkpoint_path,) = (tmp_path / "checkpoints").glob("*.ckpt")
    state = torch.load(checkpoint_path, weights_only=True)["state_dict"]
    assert state and all(k.startswith("model.adapter.") or "lora_" in k or "trainable_tokens_delta" in k for k in state)
