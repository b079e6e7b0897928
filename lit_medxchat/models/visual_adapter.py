"""The vision side of MedXChat: a frozen vision tower and a trainable visual adapter.

`build_vision_tower` wraps any transformers vision backbone as `VisionTower`, a module mapping
images (B, 3, H, W) to a sequence of patch/region features (B, T, C): CLIP vision models and ViTs
give their last hidden states, CNNs (ResNet, ConvNeXt, ...) their last feature map flattened
to h*w tokens. `VisualAdapter` turns those T features into `num_queries` vectors in the LLM's
embedding space with learned queries cross-attending to them (mPLUG-Owl's visual abstractor),
so every image costs the LLM a fixed number of tokens whatever the tower's resolution.

Both are plain `nn.Module`s, free of Lightning, built from Hugging Face configs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

# Normalisation used when a backbone folder ships no preprocessor config (CLIP's own statistics;
# a CXR-trained tower exported by our classifiers ships its preprocessor config).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class VisionOptions:
    """The vision tower.

    Attributes:
        name_or_path: hub id or local folder of a transformers vision backbone (a CLIP model or
            CLIP vision model, a ViT, a ResNet, ... e.g. the view classifier we export). Wins over `config`.
        config: overrides for a randomly initialised tower when `name_or_path` is None; `model_type`
            picks the architecture (default `clip_vision_model`), e.g. `{"image_size": 64, "patch_size": 16}`.
        trainable: train the tower too (the paper keeps it frozen).
        pooled_token: append the backbone's pooled output (CLIP's pooled [CLS], a CNN's global average)
            as one more feature token: the summary a classification head reads, handed to the adapter as is.
    """

    name_or_path: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    trainable: bool = False
    pooled_token: bool = False


@dataclass
class AdapterOptions:
    """The visual adapter.

    Attributes:
        kind: `abstractor` (learned queries cross-attending to the tower's features, mPLUG-Owl's
            visual abstractor: a fixed token count whatever the tower) or `mlp` (a 2-layer MLP applied to
            every tower token, LLaVA-1.5's projector: one LLM token per tower token, so
            `num_image_tokens` must equal the tower's token count).
        num_image_tokens: vectors per image handed to the LLM; each image occupies this many
            `<image>` tokens in the text (mPLUG-Owl uses 64).
        hidden_size: width of the adapter's queries and attention.
        num_layers: cross-attention blocks.
        num_heads: attention heads; must divide `hidden_size`.
        mlp_ratio: MLP width over `hidden_size`.
        dropout: dropout in attention and MLP.
        match_embedding_scale: normalise every output vector and scale it (a learned gain, started at
            the RMS of the LLM's token embeddings) so image tokens enter the LLM at the scale of words.
            Without it a from-scratch adapter starts ~40x louder than the embeddings and tends to
            collapse into an image-independent soft prompt (see docs/models-llm.md).
        lr_scale: learning rate of the adapter relative to `optim.lr` (LoRA and token rows keep 1x).
    """

    kind: str = "abstractor"
    num_image_tokens: int = 64
    hidden_size: int = 1024
    num_layers: int = 6
    num_heads: int = 16
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    match_embedding_scale: bool = True
    lr_scale: float = 1.0


class VisionTower(nn.Module):
    """A transformers vision backbone seen as images (B, 3, H, W) -> features (B, T, C).

    `image_size`, `image_mean` and `image_std` say how pixels must be prepared (square resize to
    `image_size` px, RGB in [0, 1], then (x - mean) / std) so that the pipeline prepares user images
    like the DataModule prepared the training ones.
    """

    def __init__(
        self,
        backbone: nn.Module,
        hidden_size: int,
        image_size: int,
        image_mean: tuple[float, ...] = CLIP_MEAN,
        image_std: tuple[float, ...] = CLIP_STD,
        pooled_token: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooled_token = pooled_token
        self.hidden_size = hidden_size
        self.image_size = image_size
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        # ViTs reject other sizes unless asked to interpolate their position embeddings.
        self._interpolate = getattr(backbone.config, "model_type", "") in ("vit", "clip_vision_model", "siglip")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        outputs = self.backbone(pixel_values=pixel_values, **kwargs)
        hidden = outputs.last_hidden_state
        if hidden.ndim == 4:  # CNN feature map (B, C, h, w) -> h*w tokens
            hidden = hidden.flatten(2).transpose(1, 2)
        if self.pooled_token:
            pooled = getattr(outputs, "pooler_output", None)
            if pooled is None:
                raise ValueError(f"vision.pooled_token: {type(self.backbone).__name__} returns no pooler_output")
            hidden = torch.cat([hidden, pooled.flatten(1).unsqueeze(1).to(hidden.dtype)], dim=1)
        return hidden


def _to_embedding_scale(outputs: torch.Tensor, log_gain: torch.Tensor) -> torch.Tensor:
    """Every output vector normalised to unit RMS, then scaled by the learned gain (`match_embedding_scale`)."""
    return outputs * outputs.pow(2).mean(-1, keepdim=True).add(1e-6).rsqrt() * log_gain.exp()


class CrossAttentionBlock(nn.Module):
    """Pre-norm block: queries attend to [image features; queries], then an MLP (both residual)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(hidden_size)
        self.norm_kv = nn.LayerNorm(hidden_size)
        self.attn = nn.MultiheadAttention(hidden_size, num_heads, dropout=dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(hidden_size)
        inner = int(hidden_size * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, inner), nn.GELU(), nn.Dropout(dropout), nn.Linear(inner, hidden_size)
        )

    def forward(self, queries: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        q = self.norm_q(queries)
        # Like mPLUG-Owl's abstractor, keys/values include the queries themselves.
        kv = torch.cat([self.norm_kv(features), q], dim=1)
        queries = queries + self.attn(q, kv, kv, need_weights=False)[0]
        return queries + self.mlp(self.norm_mlp(queries))


class VisualAdapter(nn.Module):
    """Learned queries + cross-attention: tower features (B, T, C_vis) -> (B, num_queries, C_llm)."""

    def __init__(
        self,
        vision_hidden_size: int,
        llm_hidden_size: int,
        num_queries: int = 64,
        hidden_size: int = 1024,
        num_layers: int = 6,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        match_embedding_scale: bool = False,
    ) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(
                f"adapter.hidden_size={hidden_size} is not divisible by adapter.num_heads={num_heads}; "
                "pick a head count that divides the width."
            )
        if num_queries < 1 or num_layers < 1:
            raise ValueError(
                f"adapter.num_image_tokens={num_queries} and adapter.num_layers={num_layers} must be >= 1."
            )
        self.num_queries = num_queries
        self.queries = nn.Parameter(torch.randn(1, num_queries, hidden_size) * 0.02)
        self.input_proj = nn.Linear(vision_hidden_size, hidden_size)
        self.blocks = nn.ModuleList(
            CrossAttentionBlock(hidden_size, num_heads, mlp_ratio, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_size)
        self.output_proj = nn.Linear(hidden_size, llm_hidden_size)
        self.match_embedding_scale = match_embedding_scale
        # Learned output gain (log scale, so it stays positive); `set_output_rms` starts it at the
        # LLM's embedding RMS. Unused (and constant 1) without `match_embedding_scale`. Shape (1,), not a 0-dim
        # scalar: DeepSpeed's parameter broadcast views every parameter as bytes, which a 0-dim tensor refuses.
        self.output_log_gain = nn.Parameter(torch.zeros(1), requires_grad=match_embedding_scale)

    @torch.no_grad()
    def set_output_rms(self, rms: float) -> None:
        """Start the output gain at `rms` (the RMS of the LLM's token embeddings)."""
        if rms <= 0:
            raise ValueError(f"output RMS must be positive, got {rms}")
        self.output_log_gain.fill_(math.log(rms))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = self.input_proj(features)
        queries = self.queries.expand(features.shape[0], -1, -1)
        for block in self.blocks:
            queries = block(queries, features)
        outputs = self.output_proj(self.norm(queries))
        return _to_embedding_scale(outputs, self.output_log_gain) if self.match_embedding_scale else outputs


class MLPProjector(nn.Module):
    """Per-token 2-layer MLP: tower features (B, T, C_vis) -> (B, T, C_llm) (LLaVA-1.5's projector).

    Every output token is a function of one tower token only, so the outputs cannot drift into an
    image-independent prefix the way learned queries can; the price is one LLM token per tower token.
    """

    def __init__(
        self, vision_hidden_size: int, llm_hidden_size: int, num_tokens: int, hidden_size: int,
        dropout: float = 0.0, match_embedding_scale: bool = False,
    ) -> None:
        super().__init__()
        self.num_queries = num_tokens
        self.norm = nn.LayerNorm(vision_hidden_size)
        self.mlp = nn.Sequential(nn.Linear(vision_hidden_size, hidden_size), nn.GELU(), nn.Dropout(dropout))
        self.output_proj = nn.Linear(hidden_size, llm_hidden_size)
        self.match_embedding_scale = match_embedding_scale
        self.output_log_gain = nn.Parameter(torch.zeros(1), requires_grad=match_embedding_scale)  # (1,): see above

    set_output_rms = VisualAdapter.set_output_rms

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[1] != self.num_queries:
            raise ValueError(
                f"adapter.kind='mlp' maps every tower token to one LLM token: the tower gives {features.shape[1]} "
                f"tokens but adapter.num_image_tokens={self.num_queries}; set num_image_tokens to {features.shape[1]} "
                "(and the DataModule's num_image_tokens with it)."
            )
        outputs = self.output_proj(self.mlp(self.norm(features)))
        return _to_embedding_scale(outputs, self.output_log_gain) if self.match_embedding_scale else outputs


class VocabularyMixture(nn.Module):
    """Per-token MLP onto the LLM's vocabulary: each image token is a softmax mixture of the frozen
    LLM's own word embeddings (B, T, C_vis) -> (B, T, C_llm).

    A pretrained LLM already knows what to do with the words "effusion" or "cardiomegaly" in its prompt
    (it copies and answers about them); a token built from those embeddings needs no new input
    distribution learned by the LLM, only the right mixture from the adapter. `set_vocabulary` hands it
    the LLM's (frozen) embedding matrix; the mixture's temperature is learned.
    """

    def __init__(self, vision_hidden_size: int, num_tokens: int, hidden_size: int, vocab_size: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.num_queries = num_tokens
        self.norm = nn.LayerNorm(vision_hidden_size)
        self.mlp = nn.Sequential(nn.Linear(vision_hidden_size, hidden_size), nn.GELU(), nn.Dropout(dropout))
        self.output_proj = nn.Linear(hidden_size, vocab_size)
        self.vocabulary: torch.Tensor | None = None

    def set_vocabulary(self, embeddings: torch.Tensor) -> None:
        """The LLM's input embedding matrix (V, C_llm); kept by reference, never trained here."""
        if embeddings.shape[0] != self.output_proj.out_features:
            raise ValueError(
                f"vocabulary of {embeddings.shape[0]} rows for an adapter over {self.output_proj.out_features} words"
            )
        object.__setattr__(self, "vocabulary", embeddings)  # not a submodule: not saved, not trained here

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.vocabulary is None:
            raise RuntimeError("VocabularyMixture needs set_vocabulary(llm input embeddings) before use")
        weights = self.output_proj(self.mlp(self.norm(features))).softmax(-1)
        return weights @ self.vocabulary.detach().to(weights.dtype)


ADAPTER_KINDS = ("abstractor", "mlp", "vocabulary")


def build_visual_adapter(
    options: AdapterOptions, vision_hidden_size: int, llm_hidden_size: int, vocab_size: int | None = None
) -> VisualAdapter | MLPProjector | VocabularyMixture:
    """The adapter for a tower of width `vision_hidden_size` and an LLM of width `llm_hidden_size`
    (`vocab_size`: the LLM's vocabulary, for `kind="vocabulary"`)."""
    if options.kind not in ADAPTER_KINDS:
        raise ValueError(f"adapter.kind={options.kind!r} is not one of {ADAPTER_KINDS}")
    if options.kind == "vocabulary":
        if vocab_size is None:
            raise ValueError("adapter.kind='vocabulary' needs the LLM's vocabulary size")
        return VocabularyMixture(vision_hidden_size, options.num_image_tokens, options.hidden_size, vocab_size,
                                 options.dropout)
    if options.kind == "mlp":
        return MLPProjector(
            vision_hidden_size, llm_hidden_size, options.num_image_tokens, options.hidden_size,
            options.dropout, options.match_embedding_scale,
        )
    return VisualAdapter(
        vision_hidden_size=vision_hidden_size,
        llm_hidden_size=llm_hidden_size,
        num_queries=options.num_image_tokens,
        hidden_size=options.hidden_size,
        num_layers=options.num_layers,
        num_heads=options.num_heads,
        mlp_ratio=options.mlp_ratio,
        dropout=options.dropout,
        match_embedding_scale=options.match_embedding_scale,
    )


def build_vision_tower(options: VisionOptions, dtype: torch.dtype | None = None) -> VisionTower:
    """Build the tower from `options.name_or_path` (pretrained) or `options.config` (random weights), in `dtype`
    (default: float32). A pretrained one loads in `dtype` (under ZeRO-3 it loads partitioned: no cast after).

    Random weights depend on the torch RNG: call under a fixed seed (the LightningModule does) so
    that a checkpoint holding only trainable weights rebuilds the same frozen tower.
    Raises ValueError naming the field for unknown backbones or an image size the patch size does
    not divide.
    """
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig, AutoModel, CLIPConfig, CLIPVisionConfig, CLIPVisionModel

    from lit_medxchat.core.quiet import CLIP_OUTSIDE_VISION_TOWER, IMAGE_CLASSIFIER_HEAD, from_pretrained_expecting

    loading = {"dtype": dtype} if dtype is not None else {}
    if options.name_or_path:
        try:
            config = AutoConfig.from_pretrained(options.name_or_path)
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(
                f"vision.name_or_path={options.name_or_path!r} is not a transformers vision backbone "
                f"(hub id or folder with config.json): {error}"
            ) from error
        if isinstance(config, CLIPConfig):
            config = config.vision_config
        _check_patch_size(config, "vision.name_or_path")
        if isinstance(config, CLIPVisionConfig):
            backbone = from_pretrained_expecting(CLIPVisionModel.from_pretrained, options.name_or_path,
                                                 expected=CLIP_OUTSIDE_VISION_TOWER, **loading)
        else:
            backbone = _auto_model(
                lambda: from_pretrained_expecting(AutoModel.from_pretrained, options.name_or_path,
                                                  expected=IMAGE_CLASSIFIER_HEAD, **loading),
                "vision.name_or_path", options.name_or_path,
            )
        mean, std = _preprocessing_stats(options.name_or_path)
        processor_size = _preprocessing_size(options.name_or_path)
    else:
        overrides = dict(options.config)
        model_type = overrides.pop("model_type", "clip_vision_model")
        _check_patch_size_values(overrides.get("image_size"), overrides.get("patch_size"), "vision.config")
        try:
            config = AutoConfig.for_model(model_type, **overrides)
        except ValueError as error:
            raise ValueError(
                f"vision.config.model_type={model_type!r} is not a known transformers model type; use "
                "'clip_vision_model', 'vit', 'resnet', ... or set vision.name_or_path."
            ) from error
        except StrictDataclassError as error:  # transformers 5 configs validate themselves
            raise ValueError(f"vision.config={dict(options.config)} is invalid: {error}") from error
        _check_patch_size(config, "vision.config")
        if isinstance(config, CLIPVisionConfig):
            backbone = CLIPVisionModel(config)
        else:
            backbone = _auto_model(lambda: AutoModel.from_config(config), "vision.config.model_type", model_type)
        if dtype is not None:
            backbone = backbone.to(dtype)
        mean, std = CLIP_MEAN, CLIP_STD
        processor_size = None
    config = backbone.config
    hidden_size = _feature_width(config)
    # CNN configs state no input size: a tower exported by our classifiers says it in its preprocessor
    # config, and the pipeline must prepare images at the size the tower (and the chat data) used.
    image_size = int(_first(getattr(config, "image_size", None), processor_size or 224))
    tower = VisionTower(backbone, hidden_size, image_size, mean, std, pooled_token=options.pooled_token)
    tower.requires_grad_(options.trainable)
    if not options.trainable:
        tower.eval()
    return tower


def _auto_model(factory, field_name: str, value: str) -> nn.Module:
    try:
        model = factory()
    except (ValueError, KeyError, OSError) as error:
        raise ValueError(f"{field_name}={value!r} cannot be built as a vision backbone: {error}") from error
    if getattr(model, "main_input_name", None) != "pixel_values":
        raise ValueError(
            f"{field_name}={value!r} is not a vision backbone (its forward takes no pixel_values); "
            "use a CLIP vision model, a ViT or a CNN such as ResNet."
        )
    return model


def _feature_width(config) -> int:
    """Channels of the features the tower outputs (ViT hidden size, or a CNN's last stage)."""
    if getattr(config, "hidden_sizes", None):  # ResNet / ConvNeXt: last stage width
        return int(config.hidden_sizes[-1])
    if getattr(config, "hidden_size", None):
        return int(config.hidden_size)
    raise ValueError(f"vision backbone {config.model_type!r} states no hidden size; cannot size the adapter.")


def _check_patch_size(config, field_name: str) -> None:
    _check_patch_size_values(getattr(config, "image_size", None), getattr(config, "patch_size", None), field_name)


def _check_patch_size_values(image_size, patch_size, field_name: str) -> None:
    image_size, patch_size = _first(image_size, None), _first(patch_size, None)
    if image_size is not None and patch_size is not None and int(image_size) % int(patch_size):
        raise ValueError(
            f"{field_name}: image_size={image_size} is not divisible by patch_size={patch_size}; "
            "pick an image size that is a multiple of the patch size."
        )


def _first(value, default):
    """Configs store sizes as an int or an (h, w) pair; sizes here are square."""
    if value is None:
        return default
    if isinstance(value, (list, tuple)):
        return value[0]
    return value


def _preprocessing_size(name_or_path: str) -> int | None:
    """The square input size in a local folder's `preprocessor_config.json` (`size.height`), if any."""
    path = Path(name_or_path) / "preprocessor_config.json"
    if not path.is_file():
        return None
    size = json.loads(path.read_text()).get("size")
    if isinstance(size, dict) and "height" in size:
        return int(size["height"])
    return int(size) if isinstance(size, int) else None


def _preprocessing_stats(name_or_path: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std from a local folder's `preprocessor_config.json`, else CLIP's."""
    path = Path(name_or_path) / "preprocessor_config.json"
    if path.is_file():
        data = json.loads(path.read_text())
        if "image_mean" in data and "image_std" in data:
            return tuple(data["image_mean"]), tuple(data["image_std"])
    return CLIP_MEAN, CLIP_STD
