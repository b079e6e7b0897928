"""The LLM side of MedXChat: the tokenizer, the frozen causal LM and LoRA on it.

Builder functions returning plain transformers / peft modules (no Lightning): the chat core
(`lit_medxchat.models.medxchat`) and the demo's LLM pretraining (`models/demo_bases/lm_base.py`)
build their LLM with the same `build_llm`, so a pretrained demo base loads exactly like a hub model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from lit_medxchat.core.dtypes import resolve_dtype
from lit_medxchat.core.tokenizer import add_medxchat_tokens
from lit_medxchat.models.medxchat_options import LLMOptions, LoRAOptions

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


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

    dtype = resolve_dtype(options.frozen_dtype, "llm.frozen_dtype")
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
    from lit_medxchat.core.quiet import PEFT_GRADIENT_CHECKPOINTING, ignoring_warnings

    with ignoring_warnings((PEFT_GRADIENT_CHECKPOINTING,)):  # peft's own deprecated call, on every wrap
        return get_peft_model(llm, config)


def _module_name(root: nn.Module, target: nn.Module) -> str:
    for name, module in root.named_modules():
        if module is target:
            return name.rsplit(".", 1)[-1]
    raise ValueError(f"module {type(target).__name__} not found in {type(root).__name__}")
