"""CXR-SD (paper §3.2, Eq. 4): Stable Diffusion fine-tuned on CXRs through a text-driven ControlNet copy.

Frozen: the VAE, the UNet and the CLIP text encoder (eval mode, no grad, optionally bf16/fp16 on
GPU). Trainable: `TextControlNet` (the UNet-encoder copy, its zero convs and the zero-initialised
text-to-hint module), kept in fp32. Loss: ε-prediction MSE under SD's DDPM schedule (scaled-linear
betas 0.00085..0.012, 1000 steps), with classifier-free-guidance dropout of the report. Sampling:
DDIM or DPM-Solver++ with CFG in our own loop (the hint is text, so diffusers' ControlNet
pipeline, which expects an image hint, does not apply). The view is chosen by the prompt's view
sentence, as in the training reports.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_medxchat.core.constants import CHEXPERT_LABELS, VIEW_SENTENCES
from lit_medxchat.models.checkpoint_io import TrainableOnlyCheckpoint, seeded_init
from lit_medxchat.models.control_branch import TextControlNet, build_text_controlnet, count_parameters

SAMPLERS = ("ddim", "dpm-solver")
FROZEN_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Text the built-in tokenizer (tiny configs) is trained on: deterministic, so a run rebuilt from its
# hyper-parameters at export or resume gets the same token ids. Paper scale uses SD's CLIP tokenizer.
_BUILTIN_TOKENIZER_CORPUS: tuple[str, ...] = (
    *VIEW_SENTENCES.values(),
    *CHEXPERT_LABELS,
    "findings: impression: the lungs are clear. there is no focal consolidation, pleural effusion or pneumothorax.",
    "the cardiomediastinal silhouette is normal. heart size is normal. mild cardiomegaly is present.",
    "small left pleural effusion with adjacent atelectasis. moderate right pleural effusion.",
    "right lower lobe consolidation concerning for pneumonia. left upper lobe opacity.",
    "mild pulmonary edema with perihilar haziness. no pneumothorax. large right apical pneumothorax.",
    "a nodule in the right upper lobe measures 12 mm. a mass in the left lower lobe.",
    "endotracheal tube terminates above the carina. right internal jugular central venous catheter. support devices.",
    "no acute cardiopulmonary process. osseous structures are intact. no fracture. enlarged cardiomediastinum.",
    "bibasilar atelectasis. unchanged. improved. worsening. new. small. moderate. large. severe. mild.",
    "left right bilateral upper middle lower lobe base apex hilar retrocardiac costophrenic angle.",
)


def build_clip_tokenizer(name_or_path: str | None, vocab_size: int, max_length: int):
    """SD's CLIP tokenizer from a folder / hub id, or a small one learnt here from a built-in corpus.

    The built-in one must give the same ids every time the model is rebuilt from its
    hyper-parameters (export, resume), and the `tokenizers` BPE trainer breaks ties in hash
    order, so the merges are learnt by `learn_bpe_merges` (ties broken by the pair itself).
    """
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    if name_or_path is not None:
        tokenizer = CLIPTokenizer.from_pretrained(name_or_path)
        tokenizer.model_max_length = max_length
        return tokenizer
    base = CLIPTokenizer()
    special = [base.bos_token, base.eos_token]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    symbols = alphabet + [char + "</w>" for char in alphabet]
    if vocab_size < len(special) + len(symbols):
        raise ValueError(
            f"`tokenizer_vocab_size`={vocab_size} is below the {len(special) + len(symbols)} byte-level base symbols "
            "of a CLIP tokenizer: use at least that many"
        )
    merges = _builtin_merges(vocab_size - len(special) - len(symbols))
    vocab = {token: index for index, token in enumerate([*special, *symbols, *("".join(m) for m in merges)])}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=list(merges))
    tokenizer.model_max_length = max_length
    return tokenizer


@functools.lru_cache(maxsize=4)
def _builtin_merges(num_merges: int) -> tuple[tuple[str, str], ...]:
    """Merges learnt from `_BUILTIN_TOKENIZER_CORPUS` under CLIP's normaliser and pre-tokeniser (cached)."""
    from transformers import CLIPTokenizer

    backend = CLIPTokenizer().backend_tokenizer
    words: dict[tuple[str, ...], int] = {}
    for text in _BUILTIN_TOKENIZER_CORPUS:
        for piece, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text)):
            word = (*piece[:-1], piece[-1] + "</w>")
            words[word] = words.get(word, 0) + 1
    return tuple(learn_bpe_merges(words, num_merges))


def learn_bpe_merges(words: dict[tuple[str, ...], int], num_merges: int) -> list[tuple[str, str]]:
    """Byte-pair merges of `words` (symbol tuples -> counts): most frequent pair first, ties by the pair."""
    merges: list[tuple[str, str]] = []
    words = dict(words)
    for _ in range(num_merges):
        counts: dict[tuple[str, str], int] = {}
        for word, count in words.items():
            for pair in zip(word[:-1], word[1:], strict=True):
                counts[pair] = counts.get(pair, 0) + count
        if not counts:
            break
        best = max(counts.items(), key=lambda item: (item[1], item[0]))[0]
        merges.append(best)
        merged: dict[tuple[str, ...], int] = {}
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + count
        words = merged
    return merges


def _vae_factor(vae_config: Any) -> int:
    return 2 ** (len(vae_config.block_out_channels) - 1)


class SDParts(nn.Module):
    """The frozen Stable Diffusion: VAE, UNet, CLIP text encoder (plus the tokenizer, not a module)."""

    def __init__(self, vae: nn.Module, unet: nn.Module, text_encoder: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.vae, self.unet, self.text_encoder = vae, unet, text_encoder
        self.tokenizer = tokenizer


def build_sd_parts(
    name_or_path: str | None,
    vae_config: dict[str, Any] | None,
    unet_config: dict[str, Any] | None,
    text_encoder_config: dict[str, Any] | None,
    tokenizer_name_or_path: str | None,
    tokenizer_vocab_size: int,
    init_seed: int,
) -> SDParts:
    """Load the SD parts from `name_or_path` (SD-1.5 folder layout) or build them from config dicts."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    configs = {"vae_config": vae_config, "unet_config": unet_config, "text_encoder_config": text_encoder_config}
    if name_or_path is not None:
        given = [name for name, value in configs.items() if value is not None]
        if given:
            raise ValueError(f"give either `name_or_path` or {given}, not both (`name_or_path`={name_or_path!r})")
        try:
            vae = AutoencoderKL.from_pretrained(name_or_path, subfolder="vae")
            unet = UNet2DConditionModel.from_pretrained(name_or_path, subfolder="unet")
            text_encoder = CLIPTextModel.from_pretrained(name_or_path, subfolder="text_encoder")
        except (OSError, ValueError) as error:
            raise ValueError(
                f"`name_or_path`={name_or_path!r} is not a Stable Diffusion folder/hub id with vae/, unet/ and "
                f"text_encoder/ subfolders: {error}"
            ) from error
        if tokenizer_name_or_path is not None:
            tokenizer = CLIPTokenizer.from_pretrained(tokenizer_name_or_path)
        else:
            tokenizer = CLIPTokenizer.from_pretrained(name_or_path, subfolder="tokenizer")
        tokenizer.model_max_length = text_encoder.config.max_position_embeddings
        return SDParts(vae, unet, text_encoder, tokenizer)

    missing = [name for name, value in configs.items() if value is None]
    if missing:
        raise ValueError(
            f"without `name_or_path`, give all of vae_config, unet_config, text_encoder_config; missing {missing}"
        )
    text_encoder_config = dict(text_encoder_config)
    max_length = text_encoder_config.get("max_position_embeddings", 77)
    tokenizer = build_clip_tokenizer(tokenizer_name_or_path, tokenizer_vocab_size, max_length)
    vocab = text_encoder_config.setdefault("vocab_size", len(tokenizer))
    if vocab < len(tokenizer):
        raise ValueError(
            f"`text_encoder_config.vocab_size`={vocab} is smaller than the tokenizer's {len(tokenizer)} tokens: "
            f"raise it or leave it out (it defaults to the tokenizer size)"
        )
    # CLIP's end-of-text pooling looks up the eos id; the trained tokenizer has its own ids.
    text_encoder_config.setdefault("eos_token_id", tokenizer.eos_token_id)
    text_encoder_config.setdefault("bos_token_id", tokenizer.bos_token_id)
    text_encoder_config.setdefault("pad_token_id", tokenizer.pad_token_id)
    builders = {
        "vae_config": lambda: AutoencoderKL(**vae_config),
        "unet_config": lambda: UNet2DConditionModel(**unet_config),
        "text_encoder_config": lambda: CLIPTextModel(CLIPTextConfig(**text_encoder_config)),
    }
    parts = {}
    with seeded_init(init_seed):
        for field, build in builders.items():
            try:
                parts[field] = build()
            except (TypeError, ValueError) as error:
                raise ValueError(f"`{field}` does not build its model: {error}") from error
    return SDParts(parts["vae_config"], parts["unet_config"], parts["text_encoder_config"], tokenizer)


def validate_sd_parts(parts: SDParts, image_size: int) -> tuple[int, int]:
    """Check the parts fit together before any training; return (vae_factor, latent_size).

    Errors name the mismatching field so a YAML edit fixes them.
    """
    unet_cfg, vae_cfg, text_cfg = parts.unet.config, parts.vae.config, parts.text_encoder.config
    if unet_cfg.cross_attention_dim != text_cfg.hidden_size:
        raise ValueError(
            f"`unet_config.cross_attention_dim`={unet_cfg.cross_attention_dim} must equal "
            f"`text_encoder_config.hidden_size`={text_cfg.hidden_size} (the UNet attends over text features)"
        )
    if unet_cfg.in_channels != vae_cfg.latent_channels or unet_cfg.out_channels != vae_cfg.latent_channels:
        raise ValueError(
            f"`unet_config.in_channels`/`out_channels`=({unet_cfg.in_channels}, {unet_cfg.out_channels}) must equal "
            f"`vae_config.latent_channels`={vae_cfg.latent_channels}"
        )
    factor = _vae_factor(vae_cfg)
    if image_size % factor:
        raise ValueError(f"`image_size`={image_size} is not divisible by the VAE factor {factor}: use a multiple of it")
    latent = image_size // factor
    unet_factor = 2 ** (len(unet_cfg.block_out_channels) - 1)
    if latent % unet_factor:
        raise ValueError(
            f"`image_size`={image_size} gives {latent}-pixel latents, not divisible by the UNet's downsampling "
            f"{unet_factor}: use a multiple of {factor * unet_factor}"
        )
    if vae_cfg.in_channels not in (1, 3):
        raise ValueError(f"`vae_config.in_channels`={vae_cfg.in_channels}: CXR-SD reads 1- or 3-channel images")
    return factor, latent


class EMAWeights:
    """Exponential moving average of the trainable parameters, kept in fp32 beside the model.

    Saved in the checkpoint under `ema_state_dict`; swapped in by `CXRDiffusion.ema_weights()`
    for sampling and export (the usual practice for diffusion fine-tunes).
    """

    def __init__(self, named_params: dict[str, nn.Parameter], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"`ema_decay`={decay} must be in (0, 1), e.g. 0.9999")
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

    Args:
        name_or_path: a Stable Diffusion hub id or folder with vae/, unet/, text_encoder/, tokenizer/
            (paper scale: an SD-1.5-class model). Exclusive with the three config dicts.
        vae_config, unet_config, text_encoder_config: `AutoencoderKL`, `UNet2DConditionModel` and
            `CLIPTextConfig` keyword dicts for random-weight (tiny) models, drawn under `init_seed`.
        tokenizer_name_or_path: a CLIP tokenizer folder; by default SD's, or (config-built models) a
            small one trained on a built-in corpus with `tokenizer_vocab_size` tokens.
        image_size: training/generation size in pixels; divisible by the VAE factor and the UNet's
            downsampling.
        hint_hidden_dim, hint_num_heads: width and heads of the text-to-hint cross-attention.
        cfg_dropout_prob: probability of replacing a report by "" in training (classifier-free guidance).
        ema_decay: EMA of the trainable weights (None: off), used for sampling and export.
        sampler: "ddim" or "dpm-solver" (DPM-Solver++ 2M) for validation and `generate`.
        num_inference_steps, guidance_scale: sampling settings of validation generation.
        val_generate_batches: how many validation batches per epoch (per rank) also generate images.
        learning_rate, weight_decay, warmup_steps: AdamW over the trainable branch, linear warm-up.
        frozen_dtype: dtype of the frozen parts ("float32", "bfloat16", "float16"; low precision for GPU).
        init_seed: seed of config-built frozen weights and of the branch's random parts.
        seed: base seed of validation noise/timesteps, so validation loss is comparable across epochs.
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        vae_config: dict[str, Any] | None = None,
        unet_config: dict[str, Any] | None = None,
        text_encoder_config: dict[str, Any] | None = None,
        tokenizer_name_or_path: str | None = None,
        tokenizer_vocab_size: int = 1000,
        image_size: int = 512,
        hint_hidden_dim: int = 256,
        hint_num_heads: int = 4,
        cfg_dropout_prob: float = 0.1,
        ema_decay: float | None = None,
        sampler: str = "ddim",
        num_inference_steps: int = 20,
        guidance_scale: float = 3.0,
        val_generate_batches: int = 1,
        learning_rate: float = 1e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        frozen_dtype: str = "float32",
        init_seed: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if sampler not in SAMPLERS:
            raise ValueError(f"`sampler`={sampler!r}: choose one of {SAMPLERS}")
        if frozen_dtype not in FROZEN_DTYPES:
            raise ValueError(f"`frozen_dtype`={frozen_dtype!r}: choose one of {tuple(FROZEN_DTYPES)}")
        if not 0.0 <= cfg_dropout_prob < 1.0:
            raise ValueError(f"`cfg_dropout_prob`={cfg_dropout_prob} must be in [0, 1)")
        self.save_hyperparameters()
        parts = build_sd_parts(
            name_or_path,
            vae_config,
            unet_config,
            text_encoder_config,
            tokenizer_name_or_path,
            tokenizer_vocab_size,
            init_seed,
        )
        self.vae_factor, self.latent_size = validate_sd_parts(parts, image_size)
        self.tokenizer = parts.tokenizer
        # The copy is made from the fp32 UNet, before the frozen parts drop to low precision.
        self.control = build_text_controlnet(
            parts.unet,
            text_dim=parts.text_encoder.config.hidden_size,
            latent_size=(self.latent_size, self.latent_size),
            vae_factor=self.vae_factor,
            hint_hidden_dim=hint_hidden_dim,
            hint_num_heads=hint_num_heads,
            init_seed=init_seed,
        )
        dtype = FROZEN_DTYPES[frozen_dtype]
        for part in (parts.vae, parts.unet, parts.text_encoder):
            part.requires_grad_(False).eval()
            if dtype != torch.float32:
                part.to(dtype)
        self.vae, self.unet, self.text_encoder = parts.vae, parts.unet, parts.text_encoder
        self.noise_schedule = self._make_scheduler("ddpm")
        self.ema = EMAWeights(self._trainable_named(), ema_decay) if ema_decay is not None else None
        self._ema_step = -1
        self.truncated_texts = 0  # reports longer than the text encoder's window, counted, never hidden

    # ---- building blocks ------------------------------------------------------------------------
    def _frozen_modules(self) -> tuple[nn.Module, ...]:
        return (self.vae, self.unet, self.text_encoder)

    def _trainable_named(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.control.named_parameters() if p.requires_grad}

    def _make_scheduler(self, kind: str):
        """SD's training schedule (scaled-linear betas 0.00085..0.012, 1000 steps) for every sampler."""
        from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

        common = {
            "num_train_timesteps": 1000,
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "prediction_type": "epsilon",
        }
        if kind == "ddpm":
            return DDPMScheduler(**common, clip_sample=False)
        if kind == "ddim":
            return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)

    def train(self, mode: bool = True):
        """Lightning switches every submodule to train mode; the frozen SD must stay in eval."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self

    @property
    def num_trainable_parameters(self) -> int:
        return count_parameters(self, trainable_only=True)

    # ---- text -----------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Token ids and attention mask (B, max_length) on the model's device.

        Reports longer than the text encoder's window (77 tokens for SD) keep their first tokens
        and the end-of-text token, as SD's pipelines do; they are counted in `truncated_texts`
        (and logged as `train/truncated_text_frac`) rather than cut silently.
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
        self._last_truncated = truncated
        self.truncated_texts += truncated
        return input_ids.to(self.device), attention_mask.to(self.device)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """CLIP token features (B, L, D) as SD uses them (last hidden state, no mask) and the mask."""
        input_ids, attention_mask = self.tokenize(texts)
        return self.text_encoder(input_ids)[0], attention_mask

    # ---- the denoiser ---------------------------------------------------------------------------
    def predict_noise(self, latents: Tensor, timesteps: Tensor, text_states: Tensor, text_mask: Tensor) -> Tensor:
        """ε̂(z_t, t, text): frozen UNet plus the control branch's residuals, returned in fp32."""
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
    def encode_images(self, pixel_values: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Images (B, C, H, W) in [-1, 1] -> scaled latents (B, c, h, w) (a sample of the VAE posterior)."""
        if pixel_values.shape[-1] != self.hparams.image_size or pixel_values.shape[-2] != self.hparams.image_size:
            raise ValueError(
                f"pixel_values are {tuple(pixel_values.shape[-2:])} px but `image_size`={self.hparams.image_size}: "
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

    def diffusion_loss(self, batch: dict[str, Any], generator: torch.Generator | None = None, cfg_dropout: float = 0.0):
        """Eq. 4: E‖ε − ε̂(z_t, t, text)‖² with t ~ U{0..999} and the report dropped with prob `cfg_dropout`."""
        texts = list(batch["text"])
        if cfg_dropout > 0:
            drop = torch.rand(len(texts)) < cfg_dropout
            texts = ["" if dropped else text for text, dropped in zip(texts, drop.tolist(), strict=True)]
        text_states, text_mask = self.encode_text(texts)
        latents = self.encode_images(batch["pixel_values"], generator)
        # With a (CPU) generator, draw on the CPU for device-independent validation noise.
        device = "cpu" if generator is not None else latents.device
        noise = torch.randn(latents.shape, generator=generator, device=device).to(latents.device)
        steps = self.noise_schedule.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator, device=device)
        timesteps = timesteps.to(latents.device)
        noisy = self.noise_schedule.add_noise(latents, noise, timesteps)
        prediction = self.predict_noise(noisy, timesteps, text_states, text_mask)
        return F.mse_loss(prediction, noise)

    # ---- Lightning hooks --------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.diffusion_loss(batch, cfg_dropout=self.hparams.cfg_dropout_prob)
        batch_size = len(batch["text"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/truncated_text_frac", self._last_truncated / batch_size, batch_size=batch_size)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Update once per optimiser step (gradient accumulation repeats this hook without a step).
        if self.ema is not None and self.global_step != self._ema_step:
            self._ema_step = self.global_step
            self.ema.update(self._trainable_named())

    def _eval_generator(self, batch_idx: int) -> torch.Generator:
        rank = self.global_rank if self._trainer is not None else 0
        return torch.Generator("cpu").manual_seed(self.hparams.seed + 100_003 * rank + batch_idx)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        return self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        return self._eval_step(batch, batch_idx, "test")

    def _eval_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> dict[str, Any] | None:
        loss = self.diffusion_loss(batch, generator=self._eval_generator(batch_idx))
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=True, batch_size=len(batch["text"]))
        if batch_idx >= self.hparams.val_generate_batches:
            return None
        prompts = list(batch["text"])
        generated = self.generate(
            prompts,
            num_inference_steps=self.hparams.num_inference_steps,
            guidance_scale=self.hparams.guidance_scale,
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
        optimizer = torch.optim.AdamW(
            list(self._trainable_named().values()),
            lr=self.hparams.learning_rate,
            weight_decay=self.hparams.weight_decay,
        )
        warmup = self.hparams.warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
        )
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
                    "`ema_decay` is set but the checkpoint holds no EMA weights: resume with ema_decay=None"
                )
            self.ema.load_state_dict(checkpoint["ema_state_dict"])
        self.truncated_texts = int(checkpoint.get("truncated_texts", 0))

    # ---- sampling -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Use the EMA weights inside the block (no-op without EMA); the live weights come back after."""
        if self.ema is None:
            yield
            return
        params = self._trainable_named()
        live = {name: p.detach().clone() for name, p in params.items()}
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(self.ema.shadow[name].to(p.device, p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(live[name])

    @torch.no_grad()
    def generate(
        self, prompts: list[str], num_inference_steps: int = 20, guidance_scale: float = 3.0, seed: int = 0
    ) -> Tensor:
        """Draw one CXR per prompt: (B, 3, H, W) in [0, 1] on the model's device.

        The view follows the prompt's view sentence (e.g. "Lateral view of the chest was obtained.").
        `guidance_scale` <= 1 disables classifier-free guidance; `seed` fixes the initial noise.
        """
        if not prompts:
            raise ValueError("generate() needs at least one prompt")
        scheduler = self._make_scheduler(self.hparams.sampler)
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        use_cfg = guidance_scale > 1.0
        text_states, text_mask = self.encode_text(list(prompts) + ([""] * len(prompts) if use_cfg else []))
        generator = torch.Generator("cpu").manual_seed(seed)
        shape = (len(prompts), self.unet.config.in_channels, self.latent_size, self.latent_size)
        latents = torch.randn(shape, generator=generator).to(self.device) * scheduler.init_noise_sigma
        was_training = self.control.training
        self.control.eval()
        try:
            with self.ema_weights():
                for t in scheduler.timesteps:
                    model_in = torch.cat([latents, latents]) if use_cfg else latents
                    model_in = scheduler.scale_model_input(model_in, t)
                    eps = self.predict_noise(model_in, t.expand(model_in.shape[0]), text_states, text_mask)
                    if use_cfg:
                        eps_text, eps_empty = eps.chunk(2)
                        eps = eps_empty + guidance_scale * (eps_text - eps_empty)
                    latents = scheduler.step(eps, t, latents).prev_sample
        finally:
            self.control.train(was_training)
        return self.decode_latents(latents)

    # ---- export -------------------------------------------------------------------------------
    def export_pretrained(self, out_dir: str | Path, include_base: bool = False) -> list[Path]:
        """Write the trained branch for diffusers users (EMA weights when EMA is on).

        `controlnet/`: `ControlNetModel.from_pretrained` loads it; `text_to_hint/`: the text hint;
        `tokenizer/`: the CLIP tokenizer; `scheduler/`: the sampler config; `lit_medxchat.json`: the
        hyper-parameters. With `include_base`, also `vae/`, `unet/`, `text_encoder/` (SD layout),
        which config-built (random) bases need to be usable without this package.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with self.ema_weights():
            written = self.control.save_pretrained(out_dir, seed=self.hparams.init_seed)
        self.tokenizer.save_pretrained(out_dir / "tokenizer")
        self._make_scheduler(self.hparams.sampler).save_pretrained(out_dir / "scheduler")
        if include_base:
            for name, module in (("vae", self.vae), ("unet", self.unet), ("text_encoder", self.text_encoder)):
                module.save_pretrained(out_dir / name)
        notes = {
            "module_class": type(self).__name__,
            "hyper_parameters": dict(self.hparams),
            "ema": self.ema is not None,
            "trainable_parameters": self.num_trainable_parameters,
        }
        (out_dir / "lit_medxchat.json").write_text(json.dumps(notes, indent=2, default=str) + "\n")
        others = [p for p in out_dir.rglob("*") if p.is_file() and p not in written]
        return sorted(set(written) | set(others))


def load_text_controlnet(folder: str | Path) -> TextControlNet:
    """The exported branch (`CXRDiffusion.export_pretrained`) as a `TextControlNet`."""
    return TextControlNet.from_pretrained(folder)


def tiny_diffusion_kwargs(image_size: int = 32) -> dict[str, Any]:
    """`CXRDiffusion` arguments for random-weight SD parts that train at ~0.05 s/step on a CPU core.

    A 2x VAE (so 32 px images give 16 px latents), a (16, 32) UNet, a 2-layer CLIP text encoder
    with a 64-token window, and the built-in 800-token tokenizer.
    """
    return {
        "vae_config": {
            "in_channels": 3,
            "out_channels": 3,
            "latent_channels": 4,
            "block_out_channels": [8, 16],
            "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2,
            "layers_per_block": 1,
            "norm_num_groups": 4,
        },
        "unet_config": {
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
        "text_encoder_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
        },
        "tokenizer_vocab_size": 800,
        "image_size": image_size,
        "hint_hidden_dim": 16,
        "hint_num_heads": 2,
        "learning_rate": 1e-3,
        "num_inference_steps": 4,
    }
