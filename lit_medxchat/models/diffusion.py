"""CXR-SD (paper §3.2, Eq. 4) training: the LightningModule around `TextToCXR`.

Frozen: the VAE, the UNet and the CLIP text encoder (eval mode, no grad, optionally bf16/fp16 on
GPU). Trainable: `TextControlNet` (the UNet-encoder copy, its zero convs and the zero-initialised
text-to-hint module), kept in fp32. Loss: ε-prediction MSE under SD's DDPM schedule (scaled-linear
betas 0.00085..0.012, 1000 steps), with classifier-free-guidance dropout of the report. Sampling
and export are the core's (`lit_medxchat.models.text_to_cxr`), with the EMA weights swapped in when
EMA is on; this module adds the steps, the optimiser and the EMA as training state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_medxchat.core.schedules import linear_warmup
from lit_medxchat.models.checkpoint_io import TrainableOnlyCheckpoint
from lit_medxchat.models.control_branch import TextControlNet, count_parameters
from lit_medxchat.models.eval_loss import eval_loss_metrics, log_eval_loss
from lit_medxchat.models.text_to_cxr import (
    BranchOptions,
    EMAOptions,
    SamplingOptions,
    SDBaseOptions,
    TextToCXR,
    TrainingOptions,
    as_options,
    tiny_text_to_cxr_options,
)


class EMAWeights:
    """Exponential moving average of the trainable parameters, kept in fp32 beside the model.

    Saved in the checkpoint under `ema_state_dict` (keys as in `TextToCXR.trainable_named`);
    swapped in by `CXRDiffusion.ema_weights()` for sampling and export (the usual practice for
    diffusion fine-tunes), and by `TextToCXR.from_checkpoint` for inference.
    """

    def __init__(self, named_params: dict[str, nn.Parameter], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"`ema.decay`={decay} must be in (0, 1), e.g. 0.9999")
        self.decay = decay
        self.shadow = {name: param.detach().float().clone() for name, param in named_params.items()}

    @torch.no_grad()
    def update(self, named_params: dict[str, nn.Parameter]) -> None:
        for name, param in named_params.items():
            shadow = self.shadow[name]
            if shadow.device != param.device:
                shadow = self.shadow[name] = shadow.to(param.device)
            shadow.lerp_(param.detach().float(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, Tensor]:
        return {name: value.cpu() for name, value in self.shadow.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if set(state) != set(self.shadow):
            raise ValueError(
                f"EMA state does not match the trainable parameters ({len(state)} vs {len(self.shadow)} tensors): "
                "the checkpoint comes from another ControlNet configuration"
            )
        self.shadow = {name: value.float().clone() for name, value in state.items()}


class CXRDiffusion(TrainableOnlyCheckpoint, L.LightningModule):
    """CXR-SD as a LightningModule (batches: docs/data-contracts.md §3, diffusion batch).

    The model itself is `self.core`, a `TextToCXR`. Its submodules (`vae`, `unet`,
    `text_encoder`, `control`) are registered here under the same names, not under `core.`, so
    this module's state dict *is* the core's: checkpoints keep their `control.*` keys and
    `TextToCXR.from_checkpoint` loads them without renaming.

    Args:
        base: the frozen Stable Diffusion (hub id/folder, or config dicts for random weights).
        branch: the trainable control branch.
        sampling: sampler and validation generation settings.
        training: AdamW, warm-up and classifier-free-guidance dropout.
        ema: EMA of the trainable weights (off by default), used for sampling and export.
        image_size: training/generation size in pixels; divisible by the VAE factor and the UNet's
            downsampling; the DataModule's `resolution` must equal it.
        init_seed: seed of config-built frozen weights and of the branch's random parts.
        seed: base seed of validation noise/timesteps, so validation loss is comparable across epochs.
    """

    def __init__(
        self,
        base: SDBaseOptions | None = None,
        branch: BranchOptions | None = None,
        sampling: SamplingOptions | None = None,
        training: TrainingOptions | None = None,
        ema: EMAOptions | None = None,
        image_size: int = 512,
        init_seed: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.training_options = as_options(training, TrainingOptions, "training")
        self.ema_options = as_options(ema, EMAOptions, "ema")
        if not 0.0 <= self.training_options.cfg_dropout_prob < 1.0:
            raise ValueError(f"`training.cfg_dropout_prob`={self.training_options.cfg_dropout_prob} must be in [0, 1)")
        core = TextToCXR(base, branch, sampling, image_size, init_seed)
        self.eval_losses = eval_loss_metrics()
        # Plain dicts, so that checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(
            {
                "base": asdict(core.base_options),
                "branch": asdict(core.branch_options),
                "sampling": asdict(core.sampling_options),
                "training": asdict(self.training_options),
                "ema": asdict(self.ema_options),
                "image_size": core.image_size,
                "init_seed": core.init_seed,
                "seed": int(seed),
            }
        )
        core.hyper_parameters = dict(self.hparams)
        object.__setattr__(self, "core", core)  # not a submodule: its children are ours (see the class doc)
        for name, child in core.named_children():
            self.add_module(name, child)
        decay = self.ema_options.decay
        self.ema = EMAWeights(core.trainable_named(), decay) if decay is not None else None
        self._ema_step = -1

    # ---- the core's parts and methods, for callers of the LightningModule ------------------------
    @property
    def sampling_options(self) -> SamplingOptions:
        return self.core.sampling_options

    @property
    def tokenizer(self) -> Any:
        return self.core.tokenizer

    @property
    def noise_schedule(self) -> Any:
        return self.core.noise_schedule

    @property
    def image_size(self) -> int:
        return self.core.image_size

    @property
    def latent_size(self) -> int:
        return self.core.latent_size

    @property
    def vae_factor(self) -> int:
        return self.core.vae_factor

    @property
    def truncated_texts(self) -> int:
        """Reports longer than the text encoder's window so far (kept across resume)."""
        return self.core.truncated_texts

    @truncated_texts.setter
    def truncated_texts(self, value: int) -> None:
        self.core.truncated_texts = int(value)

    @property
    def num_trainable_parameters(self) -> int:
        return count_parameters(self, trainable_only=True)

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        return self.core.tokenize(texts)

    def encode_text(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        return self.core.encode_text(texts)

    def predict_noise(self, latents: Tensor, timesteps: Tensor, text_states: Tensor, text_mask: Tensor) -> Tensor:
        return self.core.denoise(latents, timesteps, text_states, text_mask)

    def encode_images(
        self, pixel_values: Tensor, generator: torch.Generator | list[torch.Generator] | None = None
    ) -> Tensor:
        return self.core.encode_images(pixel_values, generator)

    def decode_latents(self, latents: Tensor) -> Tensor:
        return self.core.decode_latents(latents)

    def train(self, mode: bool = True) -> CXRDiffusion:
        """Lightning switches every submodule to train mode; the frozen SD must stay in eval."""
        super().train(mode)
        for module in self.core.frozen_modules():
            module.eval()
        return self

    # ---- loss -------------------------------------------------------------------------------------
    def diffusion_loss(self, batch: dict[str, Any], generator: torch.Generator | None = None, cfg_dropout: float = 0.0):
        """Eq. 4: E‖ε − ε̂(z_t, t, text)‖² with t ~ U{0..999} and the report dropped with prob `cfg_dropout`.

        Randomness (caption drop-out, VAE posterior sample, noise, timestep) comes from `generator` when given,
        else from the batch's per-sample `noise_seeds` (keyed to the sample and, in training, the epoch: ranks
        draw different noise, and a sample's draw depends neither on the world size nor on its batch), else
        from the global RNG.
        """
        texts = list(batch["text"])
        per_sample = _sample_generators(batch) if generator is None else None
        if cfg_dropout > 0:
            draws = (torch.cat([torch.rand(1, generator=g) for g in per_sample]) if per_sample is not None
                     else torch.rand(len(texts)))
            dropped = (draws < cfg_dropout).tolist()
            texts = ["" if drop else text for text, drop in zip(texts, dropped, strict=True)]
        core = self.core
        text_states, text_mask = core.encode_text(texts)
        latents = core.encode_images(batch["pixel_values"], per_sample if per_sample is not None else generator)
        steps = core.noise_schedule.config.num_train_timesteps
        if per_sample is not None:
            noise = torch.stack([torch.randn(latents.shape[1:], generator=g) for g in per_sample])
            timesteps = torch.cat([torch.randint(0, steps, (1,), generator=g) for g in per_sample])
        else:
            # With a (CPU) generator, draw on the CPU for device-independent validation noise.
            device = "cpu" if generator is not None else latents.device
            noise = torch.randn(latents.shape, generator=generator, device=device)
            timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator, device=device)
        noise, timesteps = noise.to(latents.device), timesteps.to(latents.device)
        noisy = core.noise_schedule.add_noise(latents, noise, timesteps)
        prediction = core.denoise(noisy, timesteps, text_states, text_mask)
        # The base predicts the noise (Eq. 4) or, for a v-prediction base, the velocity of (latents, noise).
        epsilon = core.noise_schedule.config.prediction_type == "epsilon"
        target = noise if epsilon else core.noise_schedule.get_velocity(latents, noise, timesteps)
        return F.mse_loss(prediction, target)

    # ---- Lightning hooks --------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.diffusion_loss(batch, cfg_dropout=self.training_options.cfg_dropout_prob)
        batch_size = len(batch["text"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/truncated_text_frac", self.core.last_truncated / batch_size, batch_size=batch_size)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Update once per optimiser step (gradient accumulation repeats this hook without a step).
        if self.ema is not None and self.global_step != self._ema_step:
            self._ema_step = self.global_step
            self.ema.update(self.core.trainable_named())

    def _eval_generator(self, batch_idx: int) -> torch.Generator:
        rank = self.global_rank if self._trainer is not None else 0
        return torch.Generator("cpu").manual_seed(self.hparams.seed + 100_003 * rank + batch_idx)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        return self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        return self._eval_step(batch, batch_idx, "test")

    def _eval_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> dict[str, Any] | None:
        # Per-sample noise (the DataModule's `noise_seeds`, fixed for every validation pass) gives the same loss on
        # any number of ranks; a batch without them falls back to a generator per rank and batch.
        generator = None if "noise_seeds" in batch else self._eval_generator(batch_idx)
        loss = self.diffusion_loss(batch, generator=generator)
        log_eval_loss(self, stage, loss, len(batch["text"]))
        sampling = self.sampling_options
        if batch_idx >= sampling.val_generate_batches:
            return None
        prompts = list(batch["text"])
        generated = self.generate(
            prompts,
            num_inference_steps=sampling.num_inference_steps,
            guidance_scale=sampling.guidance_scale,
            seed=int(self._eval_generator(batch_idx).initial_seed()),
        )
        real = (batch["pixel_values"].float() / 2 + 0.5).clamp(0, 1)
        real = real.expand(-1, 3, -1, -1) if real.shape[1] == 1 else real
        return {
            "generated": generated,
            "real": real,
            "labels": batch["labels"],
            "view": batch["view"],
            "prompts": prompts,
        }

    def configure_optimizers(self):
        options = self.training_options
        optimizer = torch.optim.AdamW(
            list(self.core.trainable_named().values()), lr=options.lr, weight_decay=options.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup(options.warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.ema is not None:
            checkpoint["ema_state_dict"] = self.ema.state_dict()
        checkpoint["truncated_texts"] = self.truncated_texts

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.ema is not None:
            if "ema_state_dict" not in checkpoint:
                raise ValueError(
                    "`ema.decay` is set but the checkpoint holds no EMA weights: resume with ema.decay=null"
                )
            self.ema.load_state_dict(checkpoint["ema_state_dict"])
        self.truncated_texts = int(checkpoint.get("truncated_texts", 0))

    # ---- sampling and export (the core's, with the EMA weights) -----------------------------------
    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Use the EMA weights inside the block (no-op without EMA); the live weights come back after."""
        if self.ema is None:
            yield
            return
        params = self.core.trainable_named()
        live = {name: p.detach().clone() for name, p in params.items()}
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(self.ema.shadow[name].to(p.device, p.dtype))
        self.core.holds_ema_weights = True
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(live[name])
            self.core.holds_ema_weights = False

    def generate(
        self, prompts: list[str], num_inference_steps: int = 20, guidance_scale: float = 3.0, seed: int = 0
    ) -> Tensor:
        """`TextToCXR.generate` with the EMA weights when EMA is on: (B, 3, H, W) in [0, 1]."""
        with self.ema_weights():
            return self.core.generate(prompts, num_inference_steps, guidance_scale, seed)

    def export_pretrained(self, out_dir: str | Path, include_base: bool = False) -> list[Path]:
        """`TextToCXR.export_pretrained` with the EMA weights when EMA is on."""
        with self.ema_weights():
            return self.core.export_pretrained(out_dir, include_base)


def load_text_controlnet(folder: str | Path) -> TextControlNet:
    """The exported branch (`CXRDiffusion.export_pretrained`) as a `TextControlNet`."""
    return TextControlNet.from_pretrained(folder)


def tiny_diffusion_kwargs(image_size: int = 32) -> dict[str, Any]:
    """`CXRDiffusion` arguments for the tiny random-weight SD of `tiny_text_to_cxr_options`, at lr 1e-3.

    Trains at ~0.05 s/step on a CPU core; tests and CPU demos use it.
    """
    return {**tiny_text_to_cxr_options(image_size), "training": TrainingOptions(lr=1e-3)}


def _sample_generators(batch: dict[str, Any]) -> list[torch.Generator] | None:
    """One CPU generator per sample from the batch's `noise_seeds` (None when the batch has none)."""
    seeds = batch.get("noise_seeds")
    if seeds is None:
        return None
    return [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds.tolist()]
