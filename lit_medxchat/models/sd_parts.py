"""The frozen Stable Diffusion of CXR-SD: VAE, UNet, CLIP text encoder and tokenizer, and SD's noise schedules.

Built from a hub id / SD folder, or from config dicts for random-weight (tiny, demo) bases; checked to
fit together before any training. Plain modules, free of Lightning: the text-to-CXR core
(`lit_medxchat.models.text_to_cxr`) and the demo's SD pretraining (`models/demo_bases/sd_base.py`)
share them.

`prefix` arguments name where the fields live in the caller's config (e.g. "base." for CXR-SD's
option group), so an error names the exact YAML key to edit.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn

from lit_medxchat.core.constants import CHEXPERT_LABELS, VIEW_SENTENCES
from lit_medxchat.models.checkpoint_io import seeded_init

SAMPLERS = ("ddim", "dpm-solver")

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


def build_clip_tokenizer(name_or_path: str | None, vocab_size: int, max_length: int, prefix: str = ""):
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
            f"`{prefix}tokenizer_vocab_size`={vocab_size} is below the {len(special) + len(symbols)} byte-level "
            "base symbols of a CLIP tokenizer: use at least that many"
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
    prefix: str = "",
) -> SDParts:
    """Load the SD parts from `name_or_path` (SD-1.5 folder layout) or build them from config dicts."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    configs = {"vae_config": vae_config, "unet_config": unet_config, "text_encoder_config": text_encoder_config}
    if name_or_path is not None:
        given = [name for name, value in configs.items() if value is not None]
        if given:
            raise ValueError(
                f"give either `{prefix}name_or_path` or {[prefix + name for name in given]}, not both "
                f"(`{prefix}name_or_path`={name_or_path!r})"
            )
        try:
            vae = AutoencoderKL.from_pretrained(name_or_path, subfolder="vae")
            unet = UNet2DConditionModel.from_pretrained(name_or_path, subfolder="unet")
            text_encoder = CLIPTextModel.from_pretrained(name_or_path, subfolder="text_encoder")
        except (OSError, ValueError) as error:
            raise ValueError(
                f"`{prefix}name_or_path`={name_or_path!r} is not a Stable Diffusion folder/hub id with vae/, unet/ and "
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
            f"without `{prefix}name_or_path`, give all of {prefix}vae_config, {prefix}unet_config, "
            f"{prefix}text_encoder_config; missing {[prefix + name for name in missing]}"
        )
    text_encoder_config = dict(text_encoder_config)
    max_length = text_encoder_config.get("max_position_embeddings", 77)
    tokenizer = build_clip_tokenizer(tokenizer_name_or_path, tokenizer_vocab_size, max_length, prefix)
    vocab = text_encoder_config.setdefault("vocab_size", len(tokenizer))
    if vocab < len(tokenizer):
        raise ValueError(
            f"`{prefix}text_encoder_config.vocab_size`={vocab} is smaller than the tokenizer's {len(tokenizer)} "
            "tokens: raise it or leave it out (it defaults to the tokenizer size)"
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
                raise ValueError(f"`{prefix}{field}` does not build its model: {error}") from error
    return SDParts(parts["vae_config"], parts["unet_config"], parts["text_encoder_config"], tokenizer)


def validate_sd_parts(parts: SDParts, image_size: int, prefix: str = "") -> tuple[int, int]:
    """Check the parts fit together before any training; return (vae_factor, latent_size).

    Errors name the mismatching field so a YAML edit fixes them (`image_size` is a top-level field;
    the configs live under `prefix`).
    """
    unet_cfg, vae_cfg, text_cfg = parts.unet.config, parts.vae.config, parts.text_encoder.config
    if unet_cfg.cross_attention_dim != text_cfg.hidden_size:
        raise ValueError(
            f"`{prefix}unet_config.cross_attention_dim`={unet_cfg.cross_attention_dim} must equal "
            f"`{prefix}text_encoder_config.hidden_size`={text_cfg.hidden_size} (the UNet attends over text features)"
        )
    if unet_cfg.in_channels != vae_cfg.latent_channels or unet_cfg.out_channels != vae_cfg.latent_channels:
        raise ValueError(
            f"`{prefix}unet_config.in_channels`/`out_channels`=({unet_cfg.in_channels}, {unet_cfg.out_channels}) "
            f"must equal `{prefix}vae_config.latent_channels`={vae_cfg.latent_channels}"
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
        raise ValueError(f"`{prefix}vae_config.in_channels`={vae_cfg.in_channels}: CXR-SD reads 1- or 3-channel images")
    return factor, latent


# Stable Diffusion's own training schedule: what a base without a `scheduler/` folder (a config-built one) gets.
SD_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
}
# What the UNet predicts: the noise (SD 1.x, 2.x-base) or the velocity (SD 2.x 768 px); the loss and the samplers
# follow the base's choice. Others ("sample", ...) are refused by name rather than trained silently wrong.
PREDICTION_TYPES = ("epsilon", "v_prediction")


def base_noise_schedule(name_or_path: str | None) -> dict[str, Any]:
    """The base's training schedule from its `scheduler/scheduler_config.json` (betas, steps, prediction type).

    A config-built base (no `name_or_path`) gets SD's schedule; a pretrained base must ship its scheduler folder,
    since a UNet trained for velocities learns nonsense from a noise target and the reverse.
    """
    if name_or_path is None:
        return dict(SD_SCHEDULE)
    from diffusers import DDPMScheduler

    try:
        config = DDPMScheduler.load_config(name_or_path, subfolder="scheduler")
    except OSError as error:
        raise FileNotFoundError(
            f"base.name_or_path={name_or_path!r} has no scheduler/scheduler_config.json: the base's noise schedule "
            "and prediction type (epsilon or v_prediction) come from it; use the base's full diffusers folder"
        ) from error
    schedule = {key: config.get(key, default) for key, default in SD_SCHEDULE.items()}
    if schedule["prediction_type"] not in PREDICTION_TYPES:
        raise ValueError(
            f"{name_or_path}/scheduler/scheduler_config.json: prediction_type={schedule['prediction_type']!r} is not "
            f"supported; CXR-SD trains and samples {' or '.join(PREDICTION_TYPES)} bases"
        )
    return schedule


def make_noise_scheduler(kind: str, schedule: dict[str, Any] | None = None) -> Any:
    """The base's schedule (`base_noise_schedule`; default SD's) as `kind`.

    "ddpm" is the training schedule; "ddim" and "dpm-solver" (DPM-Solver++ 2M) are the samplers of
    `SAMPLERS`, all on the same betas and prediction type so a model trained under one samples under the others.
    """
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    common = dict(schedule or SD_SCHEDULE)
    if kind == "ddpm":
        return DDPMScheduler(**common, clip_sample=False)
    if kind == "ddim":
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    if kind == "dpm-solver":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(f"noise scheduler {kind!r}: choose 'ddpm' or one of {SAMPLERS}")
