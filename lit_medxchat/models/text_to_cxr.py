"""CXR-SD's text-to-CXR model (paper §3.2) as a plain `nn.Module`, and its option groups.

`TextToCXR` holds the frozen Stable Diffusion (VAE, UNet, CLIP text encoder and tokenizer) and the
trainable text-driven control branch (`models/control_branch.py`), and draws CXRs from reports with
classifier-free guidance in our own sampling loop (the hint is text, so diffusers' ControlNet
pipeline, which expects an image hint, does not apply). It imports no Lightning: inference and
export build it from a `CXRDiffusion` checkpoint with `TextToCXR.from_checkpoint`, and the
LightningModule (`models/diffusion.py`) trains it.

Its option groups (`text_to_cxr_options.py`, importable from here) are the typed `__init__`
arguments of both, so LightningCLI offers `--model.base.name_or_path`, `--model.branch.hint_hidden_dim`,
... with their docstrings as help.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lit_medxchat.core.dtypes import resolve_dtype
from lit_medxchat.models.checkpoint_io import (
    CheckpointMismatchError,
    check_trainable_keys,
    frozen_keys,
    state_fingerprint,
    trainable_keys,
    warn_if_frozen_base_changed,
)
from lit_medxchat.models.control_branch import build_text_controlnet, count_parameters
from lit_medxchat.models.sd_parts import (
    SAMPLERS,
    base_noise_schedule,
    build_sd_parts,
    make_noise_scheduler,
    validate_sd_parts,
)
from lit_medxchat.models.text_to_cxr_options import (
    OPTION_GROUPS,
    BranchOptions,
    EMAOptions,
    SamplingOptions,
    SDBaseOptions,
    TrainingOptions,
    as_options,
    grouped_hyper_parameters,
)

__all__ = [
    "OPTION_GROUPS",
    "BranchOptions",
    "EMAOptions",
    "SDBaseOptions",
    "SamplingOptions",
    "TextToCXR",
    "TrainingOptions",
    "as_options",
    "grouped_hyper_parameters",
    "tiny_text_to_cxr_options",
]

# The LightningModule whose checkpoints this core loads (the name `models/registry.py` knows it by).
TRAINING_MODULE = "CXRDiffusion"


class TextToCXR(nn.Module):
    """Reports in, CXRs out: frozen SD + the trainable text-driven control branch.

    Submodules (state-dict prefixes): `vae`, `unet`, `text_encoder` (frozen, eval mode, no grad) and
    `control` (trainable, fp32). A `CXRDiffusion` checkpoint's `state_dict` holds the `control.*`
    keys of this very layout.

    Args:
        base, branch, sampling: option groups (dataclasses or dicts; see their docstrings).
        image_size: training/generation size in pixels; divisible by the VAE factor and the UNet's
            downsampling.
        init_seed: seed of config-built frozen weights and of the branch's random parts.
    """

    def __init__(
        self,
        base: SDBaseOptions | dict | None = None,
        branch: BranchOptions | dict | None = None,
        sampling: SamplingOptions | dict | None = None,
        image_size: int = 512,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        self.base_options = as_options(base, SDBaseOptions, "base")
        self.branch_options = as_options(branch, BranchOptions, "branch")
        self.sampling_options = as_options(sampling, SamplingOptions, "sampling")
        if self.sampling_options.sampler not in SAMPLERS:
            raise ValueError(f"`sampling.sampler`={self.sampling_options.sampler!r}: choose one of {SAMPLERS}")
        frozen_dtype = resolve_dtype(self.base_options.frozen_dtype, "base.frozen_dtype")
        self.image_size, self.init_seed = int(image_size), int(init_seed)
        opts = self.base_options
        parts = build_sd_parts(
            opts.name_or_path,
            opts.vae_config,
            opts.unet_config,
            opts.text_encoder_config,
            opts.tokenizer_name_or_path,
            opts.tokenizer_vocab_size,
            self.init_seed,
            prefix="base.",
        )
        self.vae_factor, self.latent_size = validate_sd_parts(parts, self.image_size, prefix="base.")
        self.tokenizer = parts.tokenizer
        # The copy is made from the fp32 UNet, before the frozen parts drop to low precision.
        self.control = build_text_controlnet(
            parts.unet,
            text_dim=parts.text_encoder.config.hidden_size,
            latent_size=(self.latent_size, self.latent_size),
            vae_factor=self.vae_factor,
            hint_hidden_dim=self.branch_options.hint_hidden_dim,
            hint_num_heads=self.branch_options.hint_num_heads,
            init_seed=self.init_seed,
        )
        for part in (parts.vae, parts.unet, parts.text_encoder):
            part.requires_grad_(False).eval()
            if frozen_dtype != torch.float32:
                part.to(frozen_dtype)
        self.vae, self.unet, self.text_encoder = parts.vae, parts.unet, parts.text_encoder
        if opts.gradient_checkpointing:  # diffusers recomputes a block whenever grad is on, train or eval mode
            self.unet.enable_gradient_checkpointing()
            self.control.controlnet.enable_gradient_checkpointing()
        # The base's own schedule and prediction type (epsilon or v), for training and every sampler.
        self.schedule = base_noise_schedule(self.base_options.name_or_path)
        self.noise_schedule = make_noise_scheduler("ddpm", self.schedule)
        self.truncated_texts = 0  # reports longer than the text encoder's window, counted, never hidden
        self.last_truncated = 0  # of the last `tokenize` call
        # Written into export notes; `from_checkpoint` and the LightningModule put their own there.
        self.hyper_parameters: dict[str, Any] = {
            "base": asdict(self.base_options),
            "branch": asdict(self.branch_options),
            "sampling": asdict(self.sampling_options),
            "image_size": self.image_size,
            "init_seed": self.init_seed,
        }
        self.holds_ema_weights = False  # True while the branch holds EMA (not live) weights

    # ---- structure ------------------------------------------------------------------------------
    def frozen_modules(self) -> tuple[nn.Module, ...]:
        return (self.vae, self.unet, self.text_encoder)

    def trainable_named(self) -> dict[str, nn.Parameter]:
        """The branch's trainable parameters by their name inside `control` (the EMA's keys)."""
        return {name: p for name, p in self.control.named_parameters() if p.requires_grad}

    def train(self, mode: bool = True) -> TextToCXR:
        """Only the branch follows `mode`: the frozen SD stays in eval."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.control.controlnet.conv_in.weight.device

    @property
    def num_trainable_parameters(self) -> int:
        return count_parameters(self, trainable_only=True)

    # ---- text -----------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Token ids and attention mask (B, max_length) on the model's device.

        Reports longer than the text encoder's window (77 tokens for SD) keep their first tokens
        and the end-of-text token, as SD's pipelines do; they are counted in `truncated_texts`
        (and `last_truncated`, which training logs as `train/truncated_text_frac`) rather than cut
        silently.
        """
        max_length = self.text_encoder.config.max_position_embeddings
        encoded = self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        input_ids = torch.full((len(encoded), max_length), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), max_length), dtype=torch.long)
        truncated = 0
        for row, ids in enumerate(encoded):
            if len(ids) > max_length:
                ids, truncated = ids[: max_length - 1] + [eos], truncated + 1
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        self.last_truncated = truncated
        self.truncated_texts += truncated
        return input_ids.to(self.device), attention_mask.to(self.device)

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """CLIP token features (B, L, D) as SD uses them (last hidden state, no mask) and the mask (B, L)."""
        input_ids, attention_mask = self.tokenize(prompts)
        return self.text_encoder(input_ids)[0], attention_mask

    # ---- the denoiser ---------------------------------------------------------------------------
    def denoise(self, latents: Tensor, timesteps: Tensor, text_states: Tensor, text_mask: Tensor) -> Tensor:
        """ε̂(z_t, t, text): one frozen-UNet call with the control branch's residuals, returned in fp32."""
        down, mid = self.control(latents.float(), timesteps, text_states.float(), text_mask)
        dtype = self.unet.dtype
        out = self.unet(
            latents.to(dtype),
            timesteps,
            encoder_hidden_states=text_states.to(dtype),
            down_block_additional_residuals=[r.to(dtype) for r in down],
            mid_block_additional_residual=mid.to(dtype),
            return_dict=False,
        )[0]
        return out.float()

    @torch.no_grad()
    def encode_images(
        self, pixel_values: Tensor, generator: torch.Generator | list[torch.Generator] | None = None
    ) -> Tensor:
        """Images (B, C, H, W) in [-1, 1] -> scaled latents (B, c, h, w) (a sample of the VAE posterior)."""
        if pixel_values.shape[-1] != self.image_size or pixel_values.shape[-2] != self.image_size:
            raise ValueError(
                f"pixel_values are {tuple(pixel_values.shape[-2:])} px but `image_size`={self.image_size}: "
                "set the DataModule's image size to the model's"
            )
        channels = self.vae.config.in_channels
        images = (
            pixel_values[:, :channels]
            if pixel_values.shape[1] >= channels
            else pixel_values.expand(-1, channels, -1, -1)
        )
        posterior = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        latents = posterior.sample(generator=generator)
        return latents.float() * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: Tensor) -> Tensor:
        """Scaled latents -> images (B, 3, H, W) in [0, 1]."""
        images = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.vae.dtype)).sample.float()
        images = (images / 2 + 0.5).clamp(0, 1)
        return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images

    # ---- sampling -------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self, prompts: list[str], num_inference_steps: int = 20, guidance_scale: float = 3.0, seed: int = 0
    ) -> Tensor:
        """Draw one CXR per prompt: (B, 3, H, W) in [0, 1] on the model's device, with the branch's current weights.

        The view follows the prompt's view sentence (e.g. "Lateral view of the chest was obtained.").
        `guidance_scale` <= 1 disables classifier-free guidance; `seed` fixes the initial noise (drawn
        on the CPU, so a seed gives the same noise on every device).
        """
        if not prompts:
            raise ValueError("generate() needs at least one prompt")
        scheduler = make_noise_scheduler(self.sampling_options.sampler, self.schedule)
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        use_cfg = guidance_scale > 1.0
        text_states, text_mask = self.encode_text(list(prompts) + ([""] * len(prompts) if use_cfg else []))
        generator = torch.Generator("cpu").manual_seed(seed)
        shape = (len(prompts), self.unet.config.in_channels, self.latent_size, self.latent_size)
        latents = torch.randn(shape, generator=generator).to(self.device) * scheduler.init_noise_sigma
        was_training = self.control.training
        self.control.eval()
        try:
            for t in scheduler.timesteps:
                model_in = torch.cat([latents, latents]) if use_cfg else latents
                model_in = scheduler.scale_model_input(model_in, t)
                eps = self.denoise(model_in, t.expand(model_in.shape[0]), text_states, text_mask)
                if use_cfg:
                    eps_text, eps_empty = eps.chunk(2)
                    eps = eps_empty + guidance_scale * (eps_text - eps_empty)
                latents = scheduler.step(eps, t, latents).prev_sample
        finally:
            self.control.train(was_training)
        return self.decode_latents(latents)

    # ---- export -------------------------------------------------------------------------------
    def export_pretrained(self, out_dir: str | Path, include_base: bool = False) -> list[Path]:
        """Write the branch as it is now (EMA weights after `from_checkpoint` with EMA) for diffusers users.

        `controlnet/`: `ControlNetModel.from_pretrained` loads it; `text_to_hint/`: the text hint;
        `tokenizer/`: the CLIP tokenizer; `scheduler/`: the sampler config; `lit_medxchat.json`: the
        hyper-parameters. With `include_base`, also `vae/`, `unet/`, `text_encoder/` (SD layout),
        which config-built (random) bases need to be usable without this package.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = self.control.save_pretrained(out_dir, seed=self.init_seed)
        self.tokenizer.save_pretrained(out_dir / "tokenizer")
        make_noise_scheduler(self.sampling_options.sampler, self.schedule).save_pretrained(out_dir / "scheduler")
        if include_base:
            for name, module in (("vae", self.vae), ("unet", self.unet), ("text_encoder", self.text_encoder)):
                module.save_pretrained(out_dir / name)
        notes = {
            "module_class": TRAINING_MODULE,
            "hyper_parameters": self.hyper_parameters,
            "ema": self.holds_ema_weights,
            "trainable_parameters": self.num_trainable_parameters,
        }
        (out_dir / "lit_medxchat.json").write_text(json.dumps(notes, indent=2, default=str) + "\n")
        others = [p for p in out_dir.rglob("*") if p.is_file() and p not in written]
        return sorted(set(written) | set(others))

    # ---- loading --------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls, checkpoint: dict[str, Any], map_location: str | torch.device = "cpu", **overrides: Any
    ) -> TextToCXR:
        """The model a `CXRDiffusion` checkpoint describes, in eval mode, ready to generate and export.

        Built from the checkpoint's hyper-parameters (`overrides` replace top-level values or merge
        into an option group, e.g. `base={"frozen_dtype": "bfloat16"}`), the trainable weights
        loaded with the same strict key check as training resume, then the EMA weights swapped in
        when the checkpoint has them, as training does for sampling and export. Warns when the
        frozen base differs from the one the branch was trained on.
        """
        hparams = grouped_hyper_parameters(checkpoint.get("hyper_parameters") or {}, overrides)
        model = cls(
            hparams["base"], hparams["branch"], hparams["sampling"], hparams["image_size"], hparams["init_seed"]
        )
        model.hyper_parameters = hparams
        state_dict = checkpoint.get("state_dict")
        if state_dict is None:
            raise ValueError("the checkpoint has no `state_dict`: it is not a Lightning checkpoint of CXRDiffusion")
        check_trainable_keys(state_dict.keys(), trainable_keys(model), frozen_keys(model), TRAINING_MODULE)
        try:
            nn.Module.load_state_dict(model, dict(state_dict), strict=False)
        except RuntimeError as error:  # same keys, other shapes
            raise CheckpointMismatchError(
                f"{TRAINING_MODULE} checkpoint does not fit the model its hyper-parameters (and overrides) build: "
                f"{error}. Load it without overriding `base`, `branch` or `image_size`."
            ) from error
        model._warn_if_base_changed(checkpoint.get("frozen_fingerprint"))
        if "ema_state_dict" in checkpoint:
            model.load_ema_weights(checkpoint["ema_state_dict"])
        elif hparams["ema"]["decay"] is not None:
            raise ValueError(
                "`ema.decay` is set but the checkpoint holds no EMA weights: load it with ema={'decay': None}"
            )
        return model.to(map_location).eval()

    def load_ema_weights(self, ema_state: dict[str, Tensor]) -> None:
        """Copy EMA weights (keys as in `trainable_named`, fp32) into the branch."""
        params = self.trainable_named()
        if set(ema_state) != set(params):
            raise ValueError(
                f"EMA state does not match the trainable parameters ({len(ema_state)} vs {len(params)} tensors): "
                "the checkpoint comes from another ControlNet configuration"
            )
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(ema_state[name].float().to(param.device, param.dtype))
        self.holds_ema_weights = True

    def _warn_if_base_changed(self, saved_fingerprint: str | None) -> None:
        if saved_fingerprint is None:
            return
        current = state_fingerprint(self.state_dict(keep_vars=True), frozen_keys(self))
        check = "base.name_or_path, its revision, init_seed and base.frozen_dtype"
        warn_if_frozen_base_changed(saved_fingerprint, current, check, stacklevel=3)


def tiny_text_to_cxr_options(image_size: int = 32) -> dict[str, Any]:
    """`TextToCXR` arguments for random-weight SD parts that train at ~0.05 s/step on a CPU core.

    A 2x VAE (so 32 px images give 16 px latents), a (16, 32) UNet, a 2-layer CLIP text encoder
    with a 64-token window, and the built-in 800-token tokenizer.
    """
    base = SDBaseOptions(
        vae_config={
            "in_channels": 3,
            "out_channels": 3,
            "latent_channels": 4,
            "block_out_channels": [8, 16],
            "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2,
            "layers_per_block": 1,
            "norm_num_groups": 4,
        },
        unet_config={
            "sample_size": image_size // 2,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": [16, 32],
            "layers_per_block": 1,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
            "cross_attention_dim": 32,
            "attention_head_dim": 8,
            "norm_num_groups": 4,
        },
        text_encoder_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
        },
        tokenizer_vocab_size=800,
    )
    return {
        "base": base,
        "branch": BranchOptions(hint_hidden_dim=16, hint_num_heads=2),
        "sampling": SamplingOptions(num_inference_steps=4),
        "image_size": image_size,
    }
