"""Pretrain a small Stable Diffusion base (VAE + unconditional UNet) on CXRs, for when none is available.

CXR-SD fine-tunes a *pretrained* SD through a trainable control branch; a random frozen VAE and
UNet cannot draw anything, whatever the branch learns. Clusters load SD from the hub; a CPU demo or
a new imaging domain without a usable SD first trains this base, then freezes it exactly like a
downloaded one. The UNet is trained unconditionally (empty prompt), so everything the report adds
(findings, view) must come through the control branch: the demo's evidence then measures the
branch, not the base.

Two phases in one run: steps `[0, vae_steps)` train the VAE (L1 reconstruction + a small KL), then
the VAE freezes, its latent scale is measured (SD's `scaling_factor`, so latents have unit std),
and the remaining steps train the UNet with SD's ε-prediction loss. `export_sd_folder` writes the
diffusers layout (`vae/`, `unet/`, `text_encoder/`, `tokenizer/`) that
`CXRDiffusion(base=SDBaseOptions(name_or_path=...))` loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from lit_medxchat.models.sd_parts import build_sd_parts, make_noise_scheduler, validate_sd_parts


class SDBasePretraining(L.LightningModule):
    """Train the SD base that CXR-SD will keep frozen.

    Args:
        vae_config / unet_config / text_encoder_config: diffusers / transformers config dicts
            (random weights; the fields of CXR-SD's `base` options).
        tokenizer_vocab_size: size of the built-in CLIP tokenizer (as `base.tokenizer_vocab_size` of CXR-SD).
        image_size: training resolution in pixels (the DataModule's `resolution`).
        vae_steps: optimiser steps spent on the VAE before the UNet phase starts.
        kl_weight: weight of the VAE's KL term (small: we want sharp reconstructions, as SD's VAE).
        learning_rate: AdamW learning rate of both phases.
    """

    def __init__(
        self,
        vae_config: dict[str, Any],
        unet_config: dict[str, Any],
        text_encoder_config: dict[str, Any],
        tokenizer_vocab_size: int = 800,
        image_size: int = 64,
        vae_steps: int = 200,
        kl_weight: float = 1e-6,
        learning_rate: float = 1e-3,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        if vae_steps < 1:
            raise ValueError(f"`vae_steps`={vae_steps} must be at least 1 (the UNet needs a trained VAE)")
        self.save_hyperparameters()
        parts = build_sd_parts(
            None, vae_config, unet_config, text_encoder_config, None, tokenizer_vocab_size, init_seed
        )
        validate_sd_parts(parts, image_size)
        self.vae, self.unet, self.text_encoder, self.tokenizer = (
            parts.vae,
            parts.unet,
            parts.text_encoder,
            parts.tokenizer,
        )
        self.text_encoder.requires_grad_(False)
        # SD's training schedule, as CXR-SD uses it; exported with the base, where CXR-SD reads it back.
        self.noise_schedule = make_noise_scheduler("ddpm")

    def train(self, mode: bool = True):
        super().train(mode)
        self.text_encoder.eval()  # frozen: never in train mode
        return self

    @property
    def in_vae_phase(self) -> bool:
        return self.global_step < self.hparams.vae_steps

    def _images(self, pixel_values: Tensor) -> Tensor:
        channels = self.vae.config.in_channels
        return (
            pixel_values[:, :channels]
            if pixel_values.shape[1] >= channels
            else pixel_values.expand(-1, channels, -1, -1)
        )

    def vae_loss(self, pixel_values: Tensor) -> Tensor:
        images = self._images(pixel_values)
        posterior = self.vae.encode(images).latent_dist
        reconstruction = self.vae.decode(posterior.sample()).sample
        return F.l1_loss(reconstruction, images) + self.hparams.kl_weight * posterior.kl().mean()

    @torch.no_grad()
    def _empty_prompt_states(self, batch_size: int) -> Tensor:
        ids = self.tokenizer(
            [""], padding="max_length", max_length=self.text_encoder.config.max_position_embeddings, return_tensors="pt"
        )["input_ids"].to(self.device)
        return self.text_encoder(ids)[0].expand(batch_size, -1, -1)

    def unet_loss(self, pixel_values: Tensor) -> Tensor:
        with torch.no_grad():
            latents = self.vae.encode(self._images(pixel_values)).latent_dist.sample()
            latents = latents * self.vae.config.scaling_factor
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, 1000, (latents.shape[0],), device=latents.device)
        noisy = self.noise_schedule.add_noise(latents, noise, timesteps)
        prediction = self.unet(noisy, timesteps, encoder_hidden_states=self._empty_prompt_states(len(latents))).sample
        return F.mse_loss(prediction, noise)

    @torch.no_grad()
    def _calibrate_latent_scale(self, pixel_values: Tensor) -> None:
        """SD scales latents to unit variance; a freshly trained VAE has its own scale."""
        latents = self.vae.encode(self._images(pixel_values)).latent_dist.mean
        self.vae.register_to_config(scaling_factor=float(1.0 / latents.std().clamp_min(1e-6)))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        pixel_values = batch["pixel_values"]
        if self.in_vae_phase:
            loss = self.vae_loss(pixel_values)
            self.log("train/vae_loss", loss, prog_bar=True, batch_size=len(pixel_values))
        else:
            if self.global_step == self.hparams.vae_steps:
                self.vae.requires_grad_(False)
                self.vae.eval()
                self._calibrate_latent_scale(pixel_values)
            loss = self.unet_loss(pixel_values)
            self.log("train/unet_loss", loss, prog_bar=True, batch_size=len(pixel_values))
        self.log("train/loss", loss, batch_size=len(pixel_values))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.vae_loss(batch["pixel_values"]) if self.in_vae_phase else self.unet_loss(batch["pixel_values"])
        self.log("val/loss", loss, batch_size=len(batch["pixel_values"]), sync_dist=True)
        return loss

    def configure_optimizers(self):
        params = list(self.vae.parameters()) + list(self.unet.parameters())
        return torch.optim.AdamW(params, lr=self.hparams.learning_rate, weight_decay=0.0)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["vae_scaling_factor"] = float(self.vae.config.scaling_factor)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "vae_scaling_factor" in checkpoint:
            self.vae.register_to_config(scaling_factor=checkpoint["vae_scaling_factor"])

    def export_sd_folder(self, out_dir: str | Path) -> Path:
        """The diffusers SD layout CXR-SD loads as its frozen base (`base.name_or_path: out_dir`)."""
        out_dir = Path(out_dir)
        for name, module in (("vae", self.vae), ("unet", self.unet), ("text_encoder", self.text_encoder)):
            module.save_pretrained(out_dir / name)
        self.tokenizer.save_pretrained(out_dir / "tokenizer")
        self.noise_schedule.save_pretrained(out_dir / "scheduler")
        return out_dir
