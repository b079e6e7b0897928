"""MedXChat's chat model (paper §3.2-3.4) as a plain `nn.Module`: frozen vision tower + trainable
visual adapter + frozen causal LLM with LoRA, and the tokenizer that places images in the text.

`MedXChatModel` embeds inputs (every run of `<image>` tokens replaced by one image's adapter outputs),
computes the LLM's outputs, generates answers and exports to peft / transformers files. It imports no
Lightning, so chat, export and the web chat run without it: `MedXChatModel.from_checkpoint` rebuilds it
from what `MedXChatLoRA` (the training wrapper in `llm_lora.py`) saved.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lit_medxchat.core.conversation import chat_template_for
from lit_medxchat.core.distributed import parameters_partitioned
from lit_medxchat.core.dtypes import resolve_dtype
from lit_medxchat.core.tokenizer import medxchat_token_ids
from lit_medxchat.models.causal_lm import apply_lora, build_llm, embedding_rms, load_tokenizer
from lit_medxchat.models.checkpoint_io import (
    cached_frozen_fingerprint,
    load_trainable_state_dict,
    seeded_init,
    warn_if_frozen_base_changed,
)
from lit_medxchat.models.medxchat_options import (
    TRAINING_ONLY_OPTIONS,
    AdapterOptions,
    GenerationOptions,
    LLMOptions,
    LoRAOptions,
    VisionOptions,
    as_options,
)
from lit_medxchat.models.visual_adapter import build_vision_tower, build_visual_adapter
from lit_medxchat.models.zero3_build import build_frozen, gathered, partitioning_active

# The training wrapper holds the core as `self.model`, so its checkpoint keys carry this prefix.
WRAPPER_PREFIX = "model."
# Offset of the trainable parts' random stream from `init_seed` (the frozen ones draw from `init_seed` itself).
TRAINABLE_INIT_STREAM = 1_000_003


class MedXChatModel(nn.Module):
    """The MedXChat chat model: images + dialogue -> answer (reports, VQA, `<Xray>` prompts).

    The vision tower and the LLM stay frozen (eval mode, no gradients) and are rebuilt from the options
    (random ones under `init_seed`); the visual adapter, the LoRA weights and the three MedXChat token
    rows train, and they are all a checkpoint needs to hold.

    Args:
        tokenizer: folder (or hub id) of the run's tokenizer; it must hold `<image>`, `<Xray>`, `</Xray>`
            (added when missing). The LLM's vocabulary is sized to it.
        vision, adapter, llm, lora, generation: option groups (dataclasses or their dicts).
        init_seed: seed of every random initialisation (tiny backbones, adapter, LoRA).
    """

    def __init__(
        self,
        tokenizer: str,
        vision: VisionOptions | dict | None = None,
        adapter: AdapterOptions | dict | None = None,
        llm: LLMOptions | dict | None = None,
        lora: LoRAOptions | dict | None = None,
        generation: GenerationOptions | dict | None = None,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        self.tokenizer_source = str(tokenizer)
        self.vision_options = as_options(vision, VisionOptions)
        self.adapter_options = as_options(adapter, AdapterOptions)
        self.llm_options = as_options(llm, LLMOptions)
        self.lora_options = as_options(lora, LoRAOptions)
        self.generation_options = as_options(generation, GenerationOptions)
        self.init_seed = init_seed
        self.tokenizer = load_tokenizer(tokenizer)
        self.image_token_id, *self.xray_token_ids = medxchat_token_ids(self.tokenizer)
        frozen_dtype = resolve_dtype(self.llm_options.frozen_dtype, "llm.frozen_dtype")
        if partitioning_active() and self.adapter_options.kind == "vocabulary":
            raise ValueError(
                "adapter.kind='vocabulary' mixes the LLM's whole embedding matrix outside the LLM's forward, "
                "which ZeRO-3 keeps partitioned: use ZeRO-2 (cluster/deepspeed/zero2.json) or adapter.kind "
                "'abstractor' / 'mlp' under ZeRO-3."
            )
        with seeded_init(init_seed):
            # Under ZeroStrategy's ZeRO-3 the frozen tower and LLM load straight into partitions (`zero3_build`).
            self.vision_tower = build_frozen(
                lambda: build_vision_tower(self.vision_options, frozen_dtype),
                pretrained=bool(self.vision_options.name_or_path),
            )
            base = build_frozen(
                lambda: build_llm(self.llm_options, self.tokenizer), pretrained=bool(self.llm_options.name_or_path)
            )
        embeddings = base.get_input_embeddings()
        self.llm_hidden_size = int(embeddings.embedding_dim)
        # The trainable parts draw from a stream of their own: they start the same however the frozen ones were
        # built (drawn at random, loaded whole, or loaded into ZeRO-3 partitions, which draws differently).
        with seeded_init(init_seed + TRAINABLE_INIT_STREAM):
            self.adapter = build_visual_adapter(
                self.adapter_options, self.vision_tower.hidden_size, self.llm_hidden_size, embeddings.num_embeddings
            )
            if self.adapter_options.kind == "vocabulary":
                self.adapter.set_vocabulary(embeddings.weight)
            elif self.adapter_options.match_embedding_scale:
                with gathered([embeddings.weight]):
                    self.adapter.set_output_rms(embedding_rms(base))
            # peft copies the MedXChat tokens' embedding (and LM-head) rows: they must be whole while it wraps.
            output = base.get_output_embeddings()
            with gathered([embeddings.weight, *([output.weight] if output is not None else [])]):
                self.llm = apply_lora(base, self.lora_options, medxchat_token_ids(self.tokenizer))
        if self.llm_options.gradient_checkpointing:
            # Non-reentrant: the frozen base's inputs need no `requires_grad` for the LoRA weights to get gradients.
            base_model = self.llm.base_model.model
            base_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        # Trainable weights in float32 even when the frozen base is bf16/fp16 (peft copies the token rows
        # in the base's dtype); they are cast to the base's dtype inside the forward.
        for param in self.parameters():
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()
        self._freeze()

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments as plain types (dicts, lists, str, numbers): what a checkpoint stores,
        so that `torch.load(weights_only=True)` reads it and `from_checkpoint` rebuilds this model."""
        return chat_hyperparameters(
            self.tokenizer_source, self.vision_options, self.adapter_options, self.llm_options, self.lora_options,
            self.generation_options, self.init_seed,
        )

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Mapping[str, Any], map_location: Any = "cpu", **overrides: Any
    ) -> MedXChatModel:
        """The model a `MedXChatLoRA` checkpoint describes, with its trained weights, in eval mode.

        Built from the checkpoint's `hyper_parameters` (training-only groups such as `optim` are ignored),
        with `overrides` replacing constructor arguments (e.g. `tokenizer=RUN/tokenizer`, `generation=`).
        The weights load with the strict trainable-key check of `checkpoint_io`: a checkpoint of another
        configuration raises `CheckpointMismatchError` naming the keys. Read the file with
        `lit_medxchat.core.checkpoint_files.load_checkpoint_file` (`weights_only=True`).
        """
        if "state_dict" not in checkpoint:
            raise ValueError("the checkpoint has no 'state_dict': it was not written by MedXChatLoRA")
        hparams = {
            key: value
            for key, value in (checkpoint.get("hyper_parameters") or {}).items()
            if not key.startswith("_") and key not in TRAINING_ONLY_OPTIONS  # LightningCLI's `_class_path`, ...
        }
        model = cls(**{**hparams, **overrides})
        load_trainable_state_dict(model, core_state_dict(checkpoint["state_dict"]), "MedXChatLoRA checkpoint")
        warn_if_frozen_base_changed(checkpoint.get("frozen_fingerprint"), model.frozen_fingerprint())
        if isinstance(map_location, str | torch.device):
            model.to(map_location)
        return model.eval()

    # ---- frozen parts -------------------------------------------------------------------------

    def _freeze(self) -> None:
        if not self.vision_options.trainable:
            self.vision_tower.requires_grad_(False)
            self.vision_tower.eval()
        self._llm_frozen_to_eval()

    def _llm_frozen_to_eval(self) -> None:
        """Frozen LLM modules in eval mode; only LoRA branches and token adapters follow `self.training`.

        With `llm.gradient_checkpointing` the decoder layers' own flag follows `self.training` too (transformers
        recomputes a layer only when that flag is set); their submodules, dropout included, stay in eval.
        """
        from transformers.modeling_layers import GradientCheckpointingLayer

        checkpointing = self.llm_options.gradient_checkpointing
        for name, module in self.llm.named_modules():
            parts = name.split(".")
            trains = any(p.startswith("lora_") or p == "token_adapter" for p in parts)
            trains = trains or (checkpointing and isinstance(module, GradientCheckpointingLayer))
            module.training = self.training if trains else False

    def train(self, mode: bool = True) -> MedXChatModel:
        # Trainers call train() on the whole model at every epoch start: re-freeze here.
        super().train(mode)
        self._freeze()
        return self

    @property
    def num_image_tokens(self) -> int:
        return self.adapter_options.num_image_tokens

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def frozen_fingerprint(self) -> str:
        """A hash of the frozen weights (cached): a checkpoint stores it to tell when its base changed."""
        return cached_frozen_fingerprint(self)

    # ---- forward ------------------------------------------------------------------------------

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images (M, 3, H, W) -> adapter outputs (M, num_image_tokens, llm_hidden)."""
        tower_dtype = next(self.vision_tower.parameters()).dtype
        with torch.set_grad_enabled(self.vision_options.trainable and torch.is_grad_enabled()):
            features = self.vision_tower(pixel_values.to(tower_dtype))
        return self.adapter(features.to(self.adapter.output_proj.weight.dtype))

    def embed_inputs(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None, image_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Token embeddings with every run of `<image>` tokens replaced by one image's adapter outputs.

        Images are taken in order: sample by sample, and within a sample in `pixel_values`' order
        (`image_mask` marks the real ones), matching the `<image>` runs left to right.
        """
        embeds = self.llm.get_input_embeddings()(input_ids)
        positions = input_ids == self.image_token_id
        images = _real_images(pixel_values, image_mask)
        expected = images.shape[0] * self.num_image_tokens if images is not None else 0
        per_sample_images = _images_per_sample(pixel_values, image_mask, input_ids.shape[0])
        per_sample_tokens = positions.sum(dim=1).cpu()
        bad = (per_sample_tokens != per_sample_images * self.num_image_tokens).nonzero().flatten().tolist()
        if bad:
            raise ValueError(
                f"batch samples {bad[:8]}: {per_sample_tokens[bad].tolist()[:8]} <image> tokens for "
                f"{per_sample_images[bad].tolist()[:8]} real images; each image needs exactly "
                f"adapter.num_image_tokens={self.num_image_tokens} <image> tokens (check the DataModule's "
                "num_image_tokens)."
            )
        if expected == 0:
            return embeds + 0.0 * self._image_free_dummy(embeds).sum().to(embeds.dtype)
        visual = self.encode_images(images).reshape(-1, embeds.shape[-1]).to(embeds.dtype)
        return embeds.masked_scatter(positions.unsqueeze(-1), visual)

    def blank_images(self, count: int) -> torch.Tensor:
        """`count` all-zero images (count, 3, S, S) at the tower's input size, on the model's device."""
        size = self.vision_tower.image_size
        return torch.zeros(count, 3, size, size, device=self.device)

    def _image_free_dummy(self, embeds: torch.Tensor) -> torch.Tensor:
        """Adapter outputs that keep a batch without images in step with batches that have them.

        DDP requires every trainable parameter to get a gradient, so the adapter always runs. Under ZeRO-3
        every module's forward all-gathers its parameters with the other ranks, so a rank whose batch has no
        image must run the vision tower too (on one blank image), or a rank with images waits for ever.
        """
        if parameters_partitioned(self):
            return self.encode_images(self.blank_images(1).to(embeds.device))
        features = embeds.new_zeros(
            1, self.num_image_tokens, self.vision_tower.hidden_size, dtype=self.adapter.output_proj.weight.dtype
        )
        return self.adapter(features)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        loss_denominator: torch.Tensor | float | None = None,
    ) -> Any:
        """The LLM's output on the embedded inputs: `.logits` (B, L, vocab), and with `labels` (-100 =
        ignored, e.g. everything but assistant tokens) `.loss`, the cross-entropy (paper Eq. 3) summed over the
        labelled tokens and divided by `loss_denominator` (default: their number, i.e. the mean)."""
        embeds = self.embed_inputs(input_ids, pixel_values, image_mask)
        extra = {"num_items_in_batch": loss_denominator} if loss_denominator is not None else {}
        # No KV cache: nothing decodes after a teacher-forced pass (and checkpointed layers refuse one).
        return self.llm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, use_cache=False, **extra)

    # ---- generation ---------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        prompt_input_ids: torch.Tensor,
        prompt_attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        **overrides: Any,
    ) -> list[str]:
        """Answers for left-padded prompts (B, P); `overrides` replace `GenerationOptions` fields.

        Returns decoded new tokens with `<image>`/pad/eos removed and `<Xray>`/`</Xray>` kept.
        """
        if (prompt_attention_mask[:, -1] == 0).any():
            raise ValueError(
                "prompt_attention_mask ends in padding: prompts must be left-padded (tokenizer.padding_side='left')."
            )
        options = {**asdict(self.generation_options), **overrides}
        contrast = float(options.pop("image_contrast", 0.0))
        if not options["do_sample"]:
            options.pop("temperature")
        embeds = self.embed_inputs(prompt_input_ids, pixel_values, image_mask)
        # Under ZeRO-3 every rank must run the same forwards: a rank without images decodes contrastively too (its
        # blank prompt equals the real one, so this is greedy decoding) while another rank's batch has images.
        has_images = _real_images(pixel_values, image_mask) is not None
        if contrast > 0 and (has_images or parameters_partitioned(self)):
            if options["num_beams"] != 1 or options["do_sample"]:
                raise ValueError("generation.image_contrast > 0 needs num_beams=1 and do_sample=false")
            blank_pixels = torch.zeros_like(pixel_values) if pixel_values is not None else None
            blank = self.embed_inputs(prompt_input_ids, blank_pixels, image_mask)
            tokens = self._contrastive(embeds, blank, prompt_attention_mask, options["max_new_tokens"], contrast)
        else:
            tokens = self._generate(embeds, prompt_attention_mask, options)
        from lit_medxchat.core.conversation import decode_answer

        return [decode_answer(self.tokenizer, row) for row in tokens]

    def _contrastive(self, embeds, blank, attention_mask, max_new_tokens: int, contrast: float) -> torch.Tensor:
        from lit_medxchat.models.contrastive_decoding import contrastive_greedy

        was_training = self.training
        self.eval()
        try:
            return contrastive_greedy(self.llm, embeds, blank, attention_mask, max_new_tokens,
                                      self.tokenizer.eos_token_id, self.tokenizer.pad_token_id, contrast,
                                      synced=parameters_partitioned(self))
        finally:
            self.train(was_training)

    def _generate(self, embeds: torch.Tensor, prompt_attention_mask: torch.Tensor, options: dict) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            tokens = self.llm.generate(
                inputs_embeds=embeds,
                attention_mask=prompt_attention_mask,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                # ZeRO-3: ranks keep decoding until all are done (transformers turns this on only when an
                # `HfDeepSpeedConfig` is alive, which Lightning never creates).
                synced_gpus=parameters_partitioned(self),
                **options,
            )
        finally:
            self.train(was_training)
        return tokens

    # ---- export -------------------------------------------------------------------------------

    def export_pretrained(self, out_dir: str | Path) -> list[Path]:
        """Write library-native files; returns the folders written.

        - `lora/`: the LoRA adapter (+ trainable token rows) in peft format, loadable with
          `PeftModel.from_pretrained(base, out/lora)` on the base LLM resized to the tokenizer;
        - `base/` (random-weight LLMs only): that base LLM, since no hub id names it;
        - `merged/`: the LLM with LoRA merged, plus the tokenizer with the conversation format as its chat template
          (`AutoModelForCausalLM` / `AutoTokenizer.from_pretrained`, `apply_chat_template`);
        - `vision/`: `vision_tower/` (transformers format), `visual_adapter.safetensors` and
          `medxchat.json` (adapter options, image size/mean/std, token ids).
        Merging works on a copy of the LLM (twice its memory for a moment); this module is unchanged.
        """
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "lora", out / "merged", out / "vision"]
        self.llm.save_pretrained(str(out / "lora"))
        if not self.llm_options.name_or_path:
            unloaded = copy.deepcopy(self.llm).unload()
            unloaded.save_pretrained(str(out / "base"))
            written.insert(1, out / "base")
        merged = copy.deepcopy(self.llm).merge_and_unload()
        merged.save_pretrained(str(out / "merged"))
        # With the conversation format as its chat template: `apply_chat_template` then prompts the merged model
        # exactly as training did (the run's own tokenizer is left as it is).
        previous = self.tokenizer.chat_template
        self.tokenizer.chat_template = chat_template_for(self.tokenizer, self.num_image_tokens)
        try:
            self.tokenizer.save_pretrained(str(out / "merged"))
        finally:
            self.tokenizer.chat_template = previous
        vision = out / "vision"
        self.vision_tower.backbone.save_pretrained(str(vision / "vision_tower"))
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.adapter.state_dict().items()},
            str(vision / "visual_adapter.safetensors"),
        )
        meta = {
            "adapter": asdict(self.adapter_options),
            "vision_hidden_size": self.vision_tower.hidden_size,
            "llm_hidden_size": self.llm_hidden_size,
            "image_size": self.vision_tower.image_size,
            "image_mean": list(self.vision_tower.image_mean),
            "image_std": list(self.vision_tower.image_std),
            "image_token_id": self.image_token_id,
        }
        (vision / "medxchat.json").write_text(json.dumps(meta, indent=2))
        return written


def chat_hyperparameters(
    tokenizer: str | Path,
    vision: VisionOptions | dict | None = None,
    adapter: AdapterOptions | dict | None = None,
    llm: LLMOptions | dict | None = None,
    lora: LoRAOptions | dict | None = None,
    generation: GenerationOptions | dict | None = None,
    init_seed: int = 0,
) -> dict[str, Any]:
    """`MedXChatModel`'s constructor arguments as plain types, without building the model (the training wrapper
    records them before `configure_model` builds it)."""
    return {
        "tokenizer": str(tokenizer),
        "vision": asdict(as_options(vision, VisionOptions)),
        "adapter": asdict(as_options(adapter, AdapterOptions)),
        "llm": asdict(as_options(llm, LLMOptions)),
        "lora": asdict(as_options(lora, LoRAOptions)),
        "generation": asdict(as_options(generation, GenerationOptions)),
        "init_seed": init_seed,
    }


def core_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A `MedXChatLoRA` checkpoint's state dict with the keys of `MedXChatModel` (the wrapper's `model.` prefix
    removed); a key without the prefix is not the wrapper's and fails the strict key check that follows."""
    return {key.removeprefix(WRAPPER_PREFIX): value for key, value in state_dict.items()}


def _real_images(pixel_values: torch.Tensor | None, image_mask: torch.Tensor | None) -> torch.Tensor | None:
    """The real images of a (B, N, 3, H, W) batch in sample-major order, or None when there are none."""
    if pixel_values is None or pixel_values.ndim != 5 or pixel_values.shape[1] == 0:
        return None
    if image_mask is None:
        image_mask = torch.ones(pixel_values.shape[:2], dtype=torch.bool, device=pixel_values.device)
    if not image_mask.any():
        return None
    return pixel_values[image_mask.bool()]


def _images_per_sample(
    pixel_values: torch.Tensor | None, image_mask: torch.Tensor | None, batch_size: int
) -> torch.Tensor:
    if pixel_values is None or pixel_values.ndim != 5:
        return torch.zeros(batch_size, dtype=torch.long)
    if image_mask is None:
        return torch.full((batch_size,), pixel_values.shape[1], dtype=torch.long)
    return image_mask.bool().sum(dim=1).cpu()
