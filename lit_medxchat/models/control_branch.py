"""The text-conditioned control branch of CXR-SD (paper §3.2): a ControlNet copy driven by the report.

A stock ControlNet encodes an *image* hint with `controlnet_cond_embedding` and adds it to the
copy's `conv_in` output. MedXChat conditions on the report instead: `TextToHint` maps the text
encoder's token features (B, L, D) to a hint (B, C0, h, w) at latent resolution through learned
spatial queries cross-attending over the tokens, ending in a zero-initialised 1x1 conv (the
paper's "zero-convolution layer" after the text encoder). The copy's outputs join the frozen
UNet through the ControlNet's own zero-initialised 1x1 convs, so at initialisation the branch
adds exact zeros and CXR-SD equals the frozen Stable Diffusion.

Plain nn.Modules, free of Lightning; `build_text_controlnet` is the builder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from lit_medxchat.models.checkpoint_io import seeded_init

if TYPE_CHECKING:  # diffusers is heavy: imported where used
    from diffusers import ControlNetModel, UNet2DConditionModel

TEXT_TO_HINT_DIR = "text_to_hint"
CONTROLNET_DIR = "controlnet"


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of `module` in place and return it (ControlNet's zero convolution)."""
    for param in module.parameters():
        nn.init.zeros_(param)
    return module


class TextToHint(nn.Module):
    """Report token features (B, L, text_dim) -> ControlNet hint (B, hint_channels, h, w).

    `grid_size` = (h, w) is the latent resolution (image size / VAE factor). Each latent position
    owns a learned query that attends over the report tokens (padding masked out), so the hint
    can place a finding where the report says it is. The last conv is zero-initialised: the
    hint starts at exactly zero and the branch learns to use the text.
    """

    def __init__(
        self,
        text_dim: int,
        hint_channels: int,
        grid_size: tuple[int, int],
        hidden_dim: int = 256,
        num_heads: int = 4,
    ) -> None:
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(
                f"`branch.hint_hidden_dim`={hidden_dim} must be divisible by `branch.hint_num_heads`={num_heads}"
            )
        self.config = {
            "text_dim": int(text_dim),
            "hint_channels": int(hint_channels),
            "grid_size": [int(grid_size[0]), int(grid_size[1])],
            "hidden_dim": int(hidden_dim),
            "num_heads": int(num_heads),
        }
        height, width = self.config["grid_size"]
        self.queries = nn.Parameter(torch.randn(height * width, hidden_dim) / math.sqrt(hidden_dim))
        self.text_proj = nn.Linear(text_dim, hidden_dim)
        self.attention = nn.MultiheadAttention(hidden_dim, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(hidden_dim)
        self.mix = nn.Sequential(nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1), nn.SiLU())
        self.zero_conv = zero_module(nn.Conv2d(hidden_dim, hint_channels, kernel_size=1))

    def forward(self, text_states: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        batch = text_states.shape[0]
        height, width = self.config["grid_size"]
        keys = self.text_proj(text_states.to(self.text_proj.weight.dtype))
        queries = self.queries.unsqueeze(0).expand(batch, -1, -1)
        padding = None if attention_mask is None else attention_mask == 0
        attended, _ = self.attention(queries, keys, keys, key_padding_mask=padding, need_weights=False)
        hidden = self.norm(attended + queries)
        hidden = hidden.transpose(1, 2).reshape(batch, -1, height, width)
        return self.zero_conv(self.mix(hidden))


class TextControlNet(nn.Module):
    """A ControlNet copy of the UNet encoder whose hint comes from `TextToHint` instead of an image.

    `forward` returns `(down_block_res_samples, mid_block_res_sample)`, the residuals the frozen
    `UNet2DConditionModel` takes as `down_block_additional_residuals` /
    `mid_block_additional_residual`.
    """

    def __init__(self, controlnet: ControlNetModel, text_to_hint: TextToHint) -> None:
        super().__init__()
        # The stock image-hint encoder is replaced by the text hint computed in `forward`; the
        # identity keeps diffusers' own forward (time embedding, blocks, zero convs) unchanged.
        controlnet.controlnet_cond_embedding = nn.Identity()
        self.controlnet = controlnet
        self.text_to_hint = text_to_hint

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor,
        text_states: Tensor,
        text_attention_mask: Tensor | None = None,
        conditioning_scale: float = 1.0,
    ) -> tuple[list[Tensor], Tensor]:
        dtype = self.controlnet.conv_in.weight.dtype
        hint = self.text_to_hint(text_states, text_attention_mask).to(dtype)
        down, mid = self.controlnet(
            sample.to(dtype),
            timestep,
            encoder_hidden_states=text_states.to(dtype),
            controlnet_cond=hint,
            conditioning_scale=conditioning_scale,
            return_dict=False,
        )
        return list(down), mid

    def save_pretrained(self, out_dir: str | Path, seed: int = 0) -> list[Path]:
        """Write `controlnet/` (diffusers format) and `text_to_hint/` (safetensors + JSON) under `out_dir`.

        So that `ControlNetModel.from_pretrained(out_dir / "controlnet")` loads with no missing key,
        the folder holds a stock image-hint embedding whose last conv is zero (image hints add
        nothing); the text hint lives in `text_to_hint/`. `TextControlNet.from_pretrained` joins them.
        """
        from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        config = self.controlnet.config
        with seeded_init(seed):
            stock = ControlNetConditioningEmbedding(
                conditioning_embedding_channels=config.block_out_channels[0],
                block_out_channels=tuple(config.conditioning_embedding_out_channels),
                conditioning_channels=config.conditioning_channels,
            ).to(self.controlnet.conv_in.weight.dtype)
        identity = self.controlnet.controlnet_cond_embedding
        self.controlnet.controlnet_cond_embedding = stock
        try:
            self.controlnet.save_pretrained(out_dir / CONTROLNET_DIR, safe_serialization=True)
        finally:
            self.controlnet.controlnet_cond_embedding = identity
        hint_dir = out_dir / TEXT_TO_HINT_DIR
        hint_dir.mkdir(parents=True, exist_ok=True)
        state = {key: value.detach().contiguous().cpu() for key, value in self.text_to_hint.state_dict().items()}
        save_file(state, str(hint_dir / "model.safetensors"))
        (hint_dir / "config.json").write_text(json.dumps(self.text_to_hint.config, indent=2) + "\n")
        return sorted(p for p in (out_dir / CONTROLNET_DIR).rglob("*") if p.is_file()) + sorted(hint_dir.iterdir())

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> TextControlNet:
        """Load what `save_pretrained` wrote (both halves; the stock image embedding is dropped)."""
        from diffusers import ControlNetModel
        from safetensors.torch import load_file

        folder = Path(folder)
        hint_dir = folder / TEXT_TO_HINT_DIR
        if not (folder / CONTROLNET_DIR).is_dir() or not hint_dir.is_dir():
            raise FileNotFoundError(f"{folder}: expected {CONTROLNET_DIR}/ and {TEXT_TO_HINT_DIR}/ written by export")
        controlnet = ControlNetModel.from_pretrained(folder / CONTROLNET_DIR)
        hint_config = json.loads((hint_dir / "config.json").read_text())
        text_to_hint = TextToHint(**{**hint_config, "grid_size": tuple(hint_config["grid_size"])})
        text_to_hint.load_state_dict(load_file(str(hint_dir / "model.safetensors")), strict=True)
        return cls(controlnet, text_to_hint)


def hint_embedding_channels(vae_factor: int) -> tuple[int, ...]:
    """Channels of a stock image-hint encoder that downsamples by `vae_factor` (a power of two).

    Recorded in the exported ControlNet config so diffusers' image-hint pipelines see matching
    shapes; (16, 32, 96, 256) for SD's 8x VAE, as diffusers' default.
    """
    steps = int(math.log2(vae_factor))
    if 2**steps != vae_factor:
        raise ValueError(f"VAE downsampling factor {vae_factor} is not a power of two")
    return (16, 32, 96, 256, 256, 256)[: steps + 1]


def build_text_controlnet(
    unet: UNet2DConditionModel,
    text_dim: int,
    latent_size: tuple[int, int],
    vae_factor: int = 8,
    hint_hidden_dim: int = 256,
    hint_num_heads: int = 4,
    init_seed: int = 0,
) -> TextControlNet:
    """Copy `unet`'s encoder into a trainable fp32 ControlNet and attach a zero-initialised text hint.

    Args:
        unet: the frozen SD UNet (any dtype; the copy is made in fp32).
        text_dim: hidden size of the text encoder's token features.
        latent_size: (h, w) of the latents the UNet denoises.
        vae_factor: the VAE's downsampling factor (only recorded for diffusers' image-hint shape).
        hint_hidden_dim, hint_num_heads: width and heads of `TextToHint`'s cross-attention.
        init_seed: seed of `TextToHint`'s random queries and projections.
    """
    from diffusers import ControlNetModel

    with seeded_init(init_seed):
        controlnet = ControlNetModel.from_unet(
            unet, conditioning_embedding_out_channels=hint_embedding_channels(vae_factor)
        )
        text_to_hint = TextToHint(
            text_dim=text_dim,
            hint_channels=unet.config.block_out_channels[0],
            grid_size=latent_size,
            hidden_dim=hint_hidden_dim,
            num_heads=hint_num_heads,
        )
    branch = TextControlNet(controlnet, text_to_hint).to(torch.float32)
    return branch.requires_grad_(True)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with `requires_grad`)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

