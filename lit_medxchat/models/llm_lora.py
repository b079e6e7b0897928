"""MedXChat's LLM-LoRA (paper §3.2-3.4): frozen vision tower + trainable visual adapter + frozen
causal LLM with LoRA, trained on chat batches with the loss on assistant tokens only (Eq. 3).

Builder functions (`build_llm`, `apply_lora`) return plain transformers / peft modules;
`MedXChatLoRA` is the thin LightningModule around them: steps, losses, optimiser, generation in
validation/test, trainable-only checkpoints, and `export_pretrained` to peft / transformers files.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from torch import nn

from lit_medxchat.core.tokenizer import add_medxchat_tokens, medxchat_token_ids
from lit_medxchat.models.checkpoint_io import TrainableOnlyCheckpoint, seeded_init, trainable_keys
from lit_medxchat.models.visual_adapter import (
    AdapterOptions,
    VisionOptions,
    build_vision_tower,
    build_visual_adapter,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

IGNORE_INDEX = -100


@dataclass
class LLMOptions:
    """The causal language model (frozen).

    Attributes:
        name_or_path: hub id or local folder of a causal LM (paper: a 7B LLaMA-class model). Wins over `config`.
        config: overrides for a randomly initialised LLM when `name_or_path` is None; `model_type`
            picks the architecture (default `llama`), e.g. `{"hidden_size": 64, "num_hidden_layers": 2}`.
            `vocab_size` always follows the tokenizer.
        frozen_dtype: dtype of the frozen LLM and tower (`float32`, `bfloat16`, `float16`); trainable
            weights stay float32.
        attn_implementation: transformers attention backend (`sdpa`, `eager`, `flash_attention_2`).
    """

    name_or_path: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    frozen_dtype: str = "float32"
    attn_implementation: str | None = None


@dataclass
class LoRAOptions:
    """LoRA on the LLM (paper release: q_proj/v_proj, r=16, alpha=16, dropout 0.1).

    Attributes:
        r: rank of the update.
        alpha: scaling numerator (the update is scaled by alpha / r).
        dropout: dropout on the LoRA branch input.
        target_modules: module-name suffixes that get LoRA; each must match at least one Linear.
    """

    r: int = 16
    alpha: int = 16
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class GenerationOptions:
    """Decoding in validation, test and chat (paper release: 3 beams, no sampling).

    Attributes:
        max_new_tokens: answer length limit in tokens.
        num_beams: beam width (1 = greedy).
        do_sample: sample instead of searching.
        temperature: sampling temperature (only with `do_sample`).
        repetition_penalty: >1 discourages repeats (of generated tokens only: the prompt enters as embeddings).
        length_penalty: beam-search length exponent.
        image_contrast: weight `a` of image-contrastive greedy decoding (`lit_medxchat.models.contrastive_decoding`):
            tokens are scored by what the image adds over a blank image; 0 = the decoding above. Needs
            `num_beams: 1`, no sampling, and applies to prompts with images only.
    """

    max_new_tokens: int = 256
    num_beams: int = 3
    do_sample: bool = False
    temperature: float = 1.0
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    image_contrast: float = 0.0


@dataclass
class OptimOptions:
    """AdamW over the trainable weights (paper release: lr 2e-5, StepLR gamma 0.85 per epoch).

    Attributes:
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up, in optimiser steps.
        epoch_gamma: learning-rate factor applied after every epoch (1.0 = constant).
    """

    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    epoch_gamma: float = 1.0


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"llm.frozen_dtype={name!r} is not one of {sorted(_DTYPES)}.")
    return _DTYPES[name]


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """Load a run's tokenizer (or a base LLM's) and make sure it holds the MedXChat tokens."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as error:
        raise ValueError(
            f"tokenizer={str(name_or_path)!r} cannot be loaded: pass the run's tokenizer folder "
            "(RUN/tokenizer, written by lit_medxchat.core.tokenizer.train_tokenizer) or a hub id."
        ) from error
    add_medxchat_tokens(tokenizer)
    return tokenizer


def build_llm(options: LLMOptions, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The frozen causal LM with its vocabulary sized to `tokenizer`.

    Random weights (from `options.config`) depend on the torch RNG: build under `seeded_init`.
    """
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = resolve_dtype(options.frozen_dtype)
    extra = {"attn_implementation": options.attn_implementation} if options.attn_implementation else {}
    if options.name_or_path:
        try:
            llm = AutoModelForCausalLM.from_pretrained(options.name_or_path, dtype=dtype, **extra)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"llm.name_or_path={options.name_or_path!r} is not a causal LM transformers can load: {error}"
            ) from error
        if llm.get_input_embeddings().num_embeddings != len(tokenizer):
            llm.resize_token_embeddings(len(tokenizer))
    else:
        overrides = dict(options.config)
        model_type = overrides.pop("model_type", "llama")
        overrides.update(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        _check_heads(overrides)
        try:
            config = AutoConfig.for_model(model_type, **overrides)
        except ValueError as error:
            raise ValueError(
                f"llm.config.model_type={model_type!r} is not a known transformers model type (e.g. 'llama')."
            ) from error
        except StrictDataclassError as error:  # transformers 5 configs validate themselves
            raise ValueError(f"llm.config={dict(options.config)} is invalid: {error}") from error
        try:
            llm = AutoModelForCausalLM.from_config(config, dtype=dtype, **extra)
        except ValueError as error:
            raise ValueError(f"llm.config.model_type={model_type!r} has no causal-LM head: {error}") from error
    llm.requires_grad_(False)
    llm.eval()
    return llm


def embedding_rms(llm: nn.Module) -> float:
    """Root mean square of the LLM's input token embeddings: the scale its layers expect inputs at."""
    weight = llm.get_input_embeddings().weight.detach()
    if weight.is_meta:  # built without memory (`lit-medxchat plan`): the value does not matter, the shape does
        return 1.0
    return float(weight.float().pow(2).mean().sqrt())


def _check_heads(overrides: dict[str, Any]) -> None:
    hidden, heads = overrides.get("hidden_size"), overrides.get("num_attention_heads")
    if hidden and heads and hidden % heads:
        raise ValueError(f"llm.config.hidden_size={hidden} is not divisible by llm.config.num_attention_heads={heads}.")


def apply_lora(llm: PreTrainedModel, options: LoRAOptions, trainable_token_ids: list[int]) -> nn.Module:
    """Wrap `llm` with LoRA and make the embedding (and untied LM-head) rows of `trainable_token_ids` train.

    LoRA alone freezes embeddings, so new tokens (`<image>`, `<Xray>`, `</Xray>`) would keep their
    random rows: peft's trainable-token adapter trains exactly those rows. Raises ValueError naming
    `lora.target_modules` when a target matches no Linear layer.
    """
    from peft import LoraConfig, get_peft_model

    linear_names = [name for name, module in llm.named_modules() if isinstance(module, nn.Linear)]
    unmatched = [t for t in options.target_modules if not any(n == t or n.endswith("." + t) for n in linear_names)]
    if not options.target_modules or unmatched:
        suffixes = sorted({name.rsplit(".", 1)[-1] for name in linear_names})
        raise ValueError(
            f"lora.target_modules={list(options.target_modules)}: {unmatched or 'empty'} match no Linear layer "
            f"of the LLM; available: {suffixes}"
        )
    token_modules = {_module_name(llm, llm.get_input_embeddings()): list(trainable_token_ids)}
    output = llm.get_output_embeddings()
    if output is not None and output.weight is not llm.get_input_embeddings().weight:
        token_modules[_module_name(llm, output)] = list(trainable_token_ids)
    config = LoraConfig(
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=list(options.target_modules),
        trainable_token_indices=token_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(llm, config)


def _module_name(root: nn.Module, target: nn.Module) -> str:
    for name, module in root.named_modules():
        if module is target:
            return name.rsplit(".", 1)[-1]
    raise ValueError(f"module {type(target).__name__} not found in {type(root).__name__}")


class MedXChatLoRA(TrainableOnlyCheckpoint, pl.LightningModule):
    """The MedXChat chat model: images + dialogue -> answer (reports, VQA, `<Xray>` prompts).

    Trains the visual adapter, the LoRA weights and the three MedXChat token rows; the vision
    tower and the LLM stay frozen (eval mode, no gradients) and are rebuilt from the
    hyper-parameters (random ones under `init_seed`), so checkpoints hold only trainable weights.

    Args:
        tokenizer: folder (or hub id) of the run's tokenizer; it must hold `<image>`, `<Xray>`, `</Xray>`
            (added when missing). The LLM's vocabulary is sized to it.
        vision, adapter, llm, lora, generation, optim: option groups (see their docstrings).
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
        self.vision_options = _as(vision, VisionOptions)
        self.adapter_options = _as(adapter, AdapterOptions)
        self.llm_options = _as(llm, LLMOptions)
        self.lora_options = _as(lora, LoRAOptions)
        self.generation_options = _as(generation, GenerationOptions)
        self.optim_options = _as(optim, OptimOptions)
        # Plain dicts, so that checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(
            {
                "tokenizer": str(tokenizer),
                "vision": asdict(self.vision_options),
                "adapter": asdict(self.adapter_options),
                "llm": asdict(self.llm_options),
                "lora": asdict(self.lora_options),
                "generation": asdict(self.generation_options),
                "optim": asdict(self.optim_options),
                "init_seed": init_seed,
            }
        )
        self.tokenizer = load_tokenizer(tokenizer)
        self.image_token_id, *self.xray_token_ids = medxchat_token_ids(self.tokenizer)
        frozen_dtype = resolve_dtype(self.llm_options.frozen_dtype)
        with seeded_init(init_seed):
            self.vision_tower = build_vision_tower(self.vision_options).to(frozen_dtype)
            base = build_llm(self.llm_options, self.tokenizer)
            llm_hidden = base.get_input_embeddings().embedding_dim
            self.llm_hidden_size = int(llm_hidden)
            vocab = base.get_input_embeddings().num_embeddings
            self.adapter = build_visual_adapter(self.adapter_options, self.vision_tower.hidden_size, llm_hidden, vocab)
            if self.adapter_options.kind == "vocabulary":
                self.adapter.set_vocabulary(base.get_input_embeddings().weight)
            elif self.adapter_options.match_embedding_scale:
                self.adapter.set_output_rms(embedding_rms(base))
            self.llm = apply_lora(base, self.lora_options, medxchat_token_ids(self.tokenizer))
        # Trainable weights in float32 even when the frozen base is bf16/fp16 (peft copies the token rows
        # in the base's dtype); they are cast to the base's dtype inside the forward.
        for param in self.parameters():
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()
        self._freeze()

    # ---- frozen parts -------------------------------------------------------------------------

    def _freeze(self) -> None:
        if not self.vision_options.trainable:
            self.vision_tower.requires_grad_(False)
            self.vision_tower.eval()
        self._llm_frozen_to_eval()

    def _llm_frozen_to_eval(self) -> None:
        """Frozen LLM modules in eval mode; only LoRA branches and token adapters follow `self.training`."""
        for name, module in self.llm.named_modules():
            parts = name.split(".")
            trains = any(p.startswith("lora_") or p == "token_adapter" for p in parts)
            module.training = self.training if trains else False

    def train(self, mode: bool = True) -> MedXChatLoRA:
        # Lightning calls train() on the whole module at every epoch start: re-freeze here.
        super().train(mode)
        self._freeze()
        return self

    @property
    def num_image_tokens(self) -> int:
        return self.adapter_options.num_image_tokens

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

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
            # Keep the adapter in the graph (DDP requires every trainable parameter to get a gradient).
            dummy = self.adapter(
                embeds.new_zeros(
                    1, self.num_image_tokens, self.vision_tower.hidden_size, dtype=self.adapter.output_proj.weight.dtype
                )
            )
            return embeds + 0.0 * dummy.sum().to(embeds.dtype)
        visual = self.encode_images(images).reshape(-1, embeds.shape[-1]).to(embeds.dtype)
        return embeds.masked_scatter(positions.unsqueeze(-1), visual)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Mean cross-entropy over the batch's assistant tokens (labels != -100)."""
        embeds = self.embed_inputs(batch["input_ids"], batch.get("pixel_values"), batch.get("image_mask"))
        outputs = self.llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"])
        return outputs.loss

    # ---- steps --------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, list]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, list]:
        return self._eval_step(batch, "test")

    def _eval_step(self, batch: dict[str, Any], stage: str) -> dict[str, list]:
        if "labels" in batch:
            loss = self(batch)
            self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=batch["input_ids"].shape[0])
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
        if contrast > 0 and _real_images(pixel_values, image_mask) is not None:
            if options["num_beams"] != 1 or options["do_sample"]:
                raise ValueError("generation.image_contrast > 0 needs num_beams=1 and do_sample=false")
            blank = self.embed_inputs(prompt_input_ids, torch.zeros_like(pixel_values), image_mask)
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
                                      self.tokenizer.eos_token_id, self.tokenizer.pad_token_id, contrast)
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
                **options,
            )
        finally:
            self.train(was_training)
        return tokens

    # ---- optimisation -------------------------------------------------------------------------

    def configure_optimizers(self):
        opt = self.optim_options
        adapter = [p for p in self.adapter.parameters() if p.requires_grad]
        adapter_ids = {id(p) for p in adapter}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in adapter_ids]
        groups = [{"params": rest, "lr": opt.lr}, {"params": adapter, "lr": opt.lr * self.adapter_options.lr_scale}]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=opt.lr, weight_decay=opt.weight_decay)
        warmup = max(opt.warmup_steps, 0)

        def factor(step: int) -> float:
            # One step-wise scheduler (DeepSpeed takes no more than one): linear warm-up times the per-epoch
            # decay, read from the trainer so a resumed run continues at the same factor.
            epoch = self.trainer.current_epoch if self._trainer is not None else 0
            return (min(1.0, (step + 1) / warmup) if warmup else 1.0) * opt.epoch_gamma**epoch

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return [optimizer], [{"scheduler": scheduler, "interval": "step"}]

    # ---- run folder and export ----------------------------------------------------------------

    def on_fit_start(self) -> None:
        """Save the tokenizer as `RUN/tokenizer` beside the checkpoints, for chat and export."""
        if self.trainer.is_global_zero:
            self.tokenizer.save_pretrained(str(Path(self.trainer.default_root_dir) / "tokenizer"))

    def export_pretrained(self, out_dir: str | Path) -> list[Path]:
        """Write library-native files; returns the folders written.

        - `lora/`: the LoRA adapter (+ trainable token rows) in peft format, loadable with
          `PeftModel.from_pretrained(base, out/lora)` on the base LLM resized to the tokenizer;
        - `base/` (random-weight LLMs only): that base LLM, since no hub id names it;
        - `merged/`: the LLM with LoRA merged, plus the tokenizer (`AutoModelForCausalLM` /
          `AutoTokenizer.from_pretrained`);
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
        self.tokenizer.save_pretrained(str(out / "merged"))
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

    def trainable_state_keys(self) -> set[str]:
        return trainable_keys(self)


def _as(value, cls):
    """Option groups arrive as dataclasses (Python, LightningCLI) or dicts (older hparams)."""
    if value is None:
        return cls()
    if isinstance(value, dict):
        return cls(**value)
    return value


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


def tiny_options(num_image_tokens: int = 4) -> dict[str, Any]:
    """Option groups of a seconds-fast random-weight MedXChatLoRA (tests, smoke runs on a CPU).

    `MedXChatLoRA(tokenizer_dir, **tiny_options())`: CLIP vision 64 px / patch 16 (16 patches),
    a 1-layer adapter, a 2-layer LLaMA of width 64, LoRA r=4 on q/v, greedy decoding.
    """
    return {
        "vision": VisionOptions(
            config={
                "image_size": 64,
                "patch_size": 16,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
            }
        ),
        "adapter": AdapterOptions(num_image_tokens=num_image_tokens, hidden_size=32, num_layers=1, num_heads=2),
        "llm": LLMOptions(
            config={
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "max_position_embeddings": 512,
                "initializer_range": 0.2,  # frozen random LM head: larger logits leave LoRA room to fit
            }
        ),
        "lora": LoRAOptions(r=4, alpha=8, dropout=0.0),
        "generation": GenerationOptions(max_new_tokens=8, num_beams=1),
        "optim": OptimOptions(lr=1e-2),
    }
