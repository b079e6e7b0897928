"""Pretrain a small causal LM on report and dialogue text, for when no pretrained LLM is available.

MedXChat freezes a *pretrained* LLM (LLaMA-7B) and adds LoRA; a random frozen LLM knows no language,
so at CPU-demo scale LoRA would spend its whole budget learning English instead of learning to read
the image. This module plays the part of the pretrained LLM: it trains every weight of a small
config-built LLM on the training split's dialogues (answers only, without image tokens: a pretrained
LLM has never seen any), then
`export_llm_folder` writes a transformers folder that `MedXChatLoRA(llm={"name_or_path": ...})`
loads and freezes exactly like a downloaded one. The image-conditioned model and its blank-image
baseline both start from this same base, so the comparison between them stays fair.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lit_medxchat.core.schedules import linear_warmup
from lit_medxchat.models.causal_lm import build_llm, load_tokenizer
from lit_medxchat.models.checkpoint_io import seeded_init
from lit_medxchat.models.medxchat_options import LLMOptions


class LMBasePretraining(L.LightningModule):
    """Train every weight of a small causal LM on chat batches (their image rows are ignored).

    Args:
        tokenizer: the run's tokenizer folder (`lit-medxchat tokenizer`).
        config: LLM config overrides (as `MedXChatLoRA`'s `llm.config`; `model_type` defaults to llama).
        learning_rate, warmup_steps: AdamW with linear warm-up.
        init_seed: seed of the random initial weights.
    """

    def __init__(
        self,
        tokenizer: str,
        config: dict[str, Any],
        learning_rate: float = 3e-3,
        warmup_steps: int = 20,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tokenizer = load_tokenizer(tokenizer)
        with seeded_init(init_seed):
            self.llm = build_llm(LLMOptions(config=dict(config)), self.tokenizer)
        self.llm.requires_grad_(True)

    def _loss(self, batch: dict[str, Any]) -> Tensor:
        return self.llm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        labels=batch["labels"]).loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.log("val/loss", loss, batch_size=len(batch["input_ids"]), sync_dist=True)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.llm.parameters(), lr=self.hparams.learning_rate, weight_decay=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup(self.hparams.warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def export_llm_folder(self, out_dir: str | Path) -> Path:
        """A transformers folder (model + tokenizer) that `AutoModelForCausalLM.from_pretrained` loads."""
        out_dir = Path(out_dir)
        self.llm.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        return out_dir
