"""MedXChat's LLM-LoRA training (paper §3.2-3.4): the LightningModule around the plain chat core.

`MedXChatLoRA` holds a `MedXChatModel` (`lit_medxchat.models.medxchat`: vision tower, visual adapter,
LLM with LoRA, tokenizer) and adds what training needs: the steps and their loss on assistant tokens
only (Eq. 3), generation in validation/test for the metric callbacks, the optimiser with its one
step-wise schedule, trainable-only checkpoints and the run's tokenizer folder. Inference loads the
core alone (`MedXChatModel.from_checkpoint`), without Lightning.

The option groups live in `medxchat_options`, the LLM builders in `causal_lm`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from torch import nn

from lit_medxchat.core.conversation import STEP_ANSWER_TOKENS, supervised_tokens
from lit_medxchat.core.schedules import linear_warmup
from lit_medxchat.models.checkpoint_io import TrainableOnlyCheckpoint, trainable_keys
from lit_medxchat.models.eval_loss import eval_loss_metrics, log_eval_loss
from lit_medxchat.models.medxchat import MedXChatModel, chat_hyperparameters
from lit_medxchat.models.medxchat_options import (
    AdapterOptions,
    GenerationOptions,
    LLMOptions,
    LoRAOptions,
    OptimOptions,
    VisionOptions,
    as_options,
)
from lit_medxchat.models.task_losses import log_eval_task_losses, log_train_task_losses, task_loss_metrics
from lit_medxchat.models.zero3_build import builds_deferred, built_parameter_bytes, partitioning_active

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lit_medxchat.models.visual_adapter import VisionTower

__all__ = ["MedXChatLoRA"]

log = logging.getLogger(__name__)


class MedXChatLoRA(TrainableOnlyCheckpoint, pl.LightningModule):
    """Trains the MedXChat chat model: images + dialogue -> answer (reports, VQA, `<Xray>` prompts).

    Trains the visual adapter, the LoRA weights and the three MedXChat token rows; the vision
    tower and the LLM stay frozen (eval mode, no gradients) and are rebuilt from the
    hyper-parameters (random ones under `init_seed`), so checkpoints hold only trainable weights.

    Args:
        tokenizer: folder (or hub id) of the run's tokenizer; it must hold `<image>`, `<Xray>`, `</Xray>`
            (added when missing). The LLM's vocabulary is sized to it.
        vision, adapter, llm, lora, generation: option groups of the model (see their docstrings).
        optim: the optimiser and its schedule.
        init_seed: seed of every random initialisation (tiny backbones, adapter, LoRA).
    """

    def __init__(
        self,
        tokenizer: str,
        vision: VisionOptions | None = None,
        adapter: AdapterOptions | None = None,
        llm: LLMOptions | None = None,
        lora: LoRAOptions | None = None,
        generation: GenerationOptions | None = None,
        optim: OptimOptions | None = None,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        # Plain dicts, so that checkpoints load with torch.load(weights_only=True); they are also what
        # `configure_model` builds the core from.
        self._core_arguments = chat_hyperparameters(tokenizer, vision, adapter, llm, lora, generation, init_seed)
        self.eval_losses = eval_loss_metrics()
        self.task_losses = task_loss_metrics()
        self.optim_options = as_options(optim, OptimOptions)
        hparams = dict(self._core_arguments)
        init_seed = hparams.pop("init_seed")
        self.save_hyperparameters({**hparams, "optim": asdict(self.optim_options), "init_seed": init_seed})
        if not builds_deferred():
            self.configure_model()

    def configure_model(self) -> None:
        """Build the chat core, once. The command line constructs this module under `deferred_builds`, so the
        build happens here, inside the strategy's context: under `ZeroStrategy`'s ZeRO-3 the frozen tower and LLM
        then load straight into partitions and no rank holds the whole base in host RAM. Anywhere else the
        constructor builds it."""
        if "model" in self._modules:
            return
        self.model = MedXChatModel(**self._core_arguments)
        if partitioning_active():
            held = self.built_parameter_bytes = built_parameter_bytes(self.model)
            log.info("chat model built under ZeRO-3: this rank holds %.1f of the frozen base's %.1f MiB",
                     held["frozen_local"] / 2**20, held["frozen_whole"] / 2**20)

    @staticmethod
    def parts_loaded_partitioned(init_args: dict[str, Any]) -> set[str]:
        """Parts of the core whose frozen weights load straight into ZeRO-3 partitions under `ZeroStrategy`, for
        these constructor arguments: the pretrained ones (`name_or_path`). Random ones are drawn whole on every
        rank first (`zero3_build`). `lit-medxchat plan` reads it to count a rank's host RAM."""
        groups = {"vision_tower": as_options(init_args.get("vision"), VisionOptions),
                  "llm": as_options(init_args.get("llm"), LLMOptions)}
        return {part for part, options in groups.items() if options.name_or_path}

    def __getattr__(self, name: str) -> Any:
        # A deferred module whose core is asked for before the Trainer built it (a callback's `setup`): build now.
        if name == "model" and "_core_arguments" in self.__dict__ and "model" not in self._modules:
            self.configure_model()
        return super().__getattr__(name)

    # ---- the core's parts, for callbacks, the planner and tests ------------------------------

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.model.tokenizer

    @property
    def vision_tower(self) -> VisionTower:
        return self.model.vision_tower

    @property
    def adapter(self) -> nn.Module:
        return self.model.adapter

    @property
    def llm(self) -> nn.Module:
        return self.model.llm

    @property
    def num_image_tokens(self) -> int:
        return self.model.num_image_tokens

    @property
    def image_token_id(self) -> int:
        return self.model.image_token_id

    @property
    def xray_token_ids(self) -> list[int]:
        return self.model.xray_token_ids

    @property
    def llm_hidden_size(self) -> int:
        return self.model.llm_hidden_size

    @property
    def vision_options(self) -> VisionOptions:
        return self.model.vision_options

    @property
    def adapter_options(self) -> AdapterOptions:
        return self.model.adapter_options

    @property
    def llm_options(self) -> LLMOptions:
        return self.model.llm_options

    @property
    def lora_options(self) -> LoRAOptions:
        return self.model.lora_options

    @property
    def generation_options(self) -> GenerationOptions:
        return self.model.generation_options

    def trainable_parameter_count(self) -> int:
        return self.model.trainable_parameter_count()

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images (M, 3, H, W) -> adapter outputs (M, num_image_tokens, llm_hidden); see `MedXChatModel`."""
        return self.model.encode_images(pixel_values)

    def embed_inputs(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None, image_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Token embeddings with the `<image>` runs replaced by adapter outputs; see `MedXChatModel`."""
        return self.model.embed_inputs(input_ids, pixel_values, image_mask)

    def generate(
        self,
        prompt_input_ids: torch.Tensor,
        prompt_attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        **overrides: Any,
    ) -> list[str]:
        """Answers for left-padded prompts; `overrides` replace `GenerationOptions` fields (`MedXChatModel`)."""
        return self.model.generate(prompt_input_ids, prompt_attention_mask, pixel_values, image_mask, **overrides)

    def export_pretrained(self, out_dir: str | Path) -> list[Path]:
        """peft / transformers files of the model: `MedXChatModel.export_pretrained`."""
        return self.model.export_pretrained(out_dir)

    # ---- steps --------------------------------------------------------------------------------

    def forward(self, batch: dict[str, Any], loss_denominator: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy summed over the batch's assistant tokens (labels != -100) over `loss_denominator`
        (default: their number, the batch mean)."""
        return self._outputs(batch, loss_denominator).loss

    def _outputs(self, batch: dict[str, Any], loss_denominator: torch.Tensor | None = None) -> Any:
        """The core's output on the batch: `.loss` as `forward` says, and `.logits` (B, L, vocab)."""
        return self.model(
            batch["input_ids"],
            batch["attention_mask"],
            batch.get("pixel_values"),
            batch.get("image_mask"),
            labels=batch["labels"],
            loss_denominator=loss_denominator,
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        answer_tokens = supervised_tokens(batch["labels"])
        denominator = self._step_denominator(batch)
        outputs = self._outputs(batch, denominator)
        loss = outputs.loss
        batch_mean = loss.detach() * (denominator / answer_tokens) if denominator is not None else loss.detach()
        self.log("train/loss", batch_mean, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        if "tasks" in batch:
            log_train_task_losses(self, outputs.logits, batch["labels"], batch["tasks"])
        return loss

    def _step_denominator(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """What makes the gradient a mean over the answer tokens of the whole optimiser step.

        Lightning divides each micro-batch's loss by the accumulation count and DDP / ZeRO average gradients
        over ranks, so a micro-batch whose summed token loss is divided by (step tokens over all ranks) /
        (accumulation x ranks) contributes exactly its tokens' share. `None` (the batch's own mean) when the
        loader did not count the step (`datamodules.step_totals`)."""
        if STEP_ANSWER_TOKENS not in batch:
            return None
        local = torch.tensor(float(batch[STEP_ANSWER_TOKENS]), device=self.device)
        total = self.trainer.strategy.reduce(local, reduce_op="sum") if self.trainer.world_size > 1 else local
        return total / (self.trainer.accumulate_grad_batches * self.trainer.world_size)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, list]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, list]:
        return self._eval_step(batch, "test")

    def _eval_step(self, batch: dict[str, Any], stage: str) -> dict[str, list]:
        if "labels" in batch:
            outputs = self._outputs(batch)  # its loss is a mean over the answer tokens: weigh it by their number
            log_eval_loss(self, stage, outputs.loss, supervised_tokens(batch["labels"]), prog_bar=False)
            if "tasks" in batch:
                log_eval_task_losses(self, stage, outputs.logits, batch["labels"], batch["tasks"])
        if "prompt_input_ids" not in batch:
            return {"predictions": [], "references": [], "tasks": [], "meta": []}
        predictions = self.generate(
            batch["prompt_input_ids"],
            batch["prompt_attention_mask"],
            batch.get("pixel_values"),
            batch.get("image_mask"),
        )
        n = len(predictions)
        return {
            "predictions": predictions,
            "references": list(batch.get("references", [""] * n)),
            "tasks": list(batch.get("tasks", [""] * n)),
            "meta": list(batch.get("meta", [{}] * n)),
        }

    # ---- optimisation -------------------------------------------------------------------------

    def configure_optimizers(self):
        opt = self.optim_options
        adapter = [p for p in self.adapter.parameters() if p.requires_grad]
        adapter_ids = {id(p) for p in adapter}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in adapter_ids]
        groups = [{"params": rest, "lr": opt.lr}, {"params": adapter, "lr": opt.lr * self.adapter_options.lr_scale}]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=opt.lr, weight_decay=opt.weight_decay)
        warmup = linear_warmup(opt.warmup_steps)

        def factor(step: int) -> float:
            # One step-wise scheduler (DeepSpeed takes no more than one): linear warm-up times the per-epoch
            # decay, read from the trainer so a resumed run continues at the same factor.
            epoch = self.trainer.current_epoch if self._trainer is not None else 0
            return warmup(step) * opt.epoch_gamma**epoch

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return [optimizer], [{"scheduler": scheduler, "interval": "step"}]

    # ---- run folder and checkpoints -----------------------------------------------------------

    def on_fit_start(self) -> None:
        """Save the tokenizer as `RUN/tokenizer` beside the checkpoints, for chat and export."""
        if self.trainer.is_global_zero:
            self.tokenizer.save_pretrained(str(Path(self.trainer.default_root_dir) / "tokenizer"))

    def trainable_state_keys(self) -> set[str]:
        return trainable_keys(self)

    def _frozen_fingerprint(self) -> str:
        # The core's fingerprint: the one `MedXChatModel.from_checkpoint` checks, with or without this wrapper.
        return self.model.frozen_fingerprint()

