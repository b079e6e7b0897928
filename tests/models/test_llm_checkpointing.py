"""`llm.gradient_checkpointing`: the decoder layers are recomputed in the backward pass, and nothing else changes
(loss, every trainable gradient, answers)."""

from __future__ import annotations

import dataclasses

import torch
from test_llm_lora import chat_batch, make_model, tokenizer_dir  # noqa: F401

from lit_medxchat.models.medxchat_options import tiny_options


def _model(tokenizer_dir, checkpointing: bool):  # noqa: F811
    llm = dataclasses.replace(tiny_options()["llm"], gradient_checkpointing=checkpointing)
    torch.manual_seed(0)
    return make_model(tokenizer_dir, llm=llm).train()


def test_checkpointing_recomputes_layers_and_changes_no_gradient(tokenizer_dir):  # noqa: F811
    plain, checkpointed = _model(tokenizer_dir, False), _model(tokenizer_dir, True)
    batch = chat_batch(plain.tokenizer)
    train = {k: batch[k] for k in ("input_ids", "attention_mask", "labels", "pixel_values", "image_mask")}
    layer_calls = {"plain": 0, "checkpointed": 0}

    def counter(name: str):
        def count(*_):
            layer_calls[name] += 1
        return count

    for name, model in (("plain", plain), ("checkpointed", checkpointed)):
        model.llm.base_model.model.model.layers[0].mlp.register_forward_pre_hook(counter(name))
        model(train).backward()
    assert layer_calls == {"plain": 1, "checkpointed": 2}, "a checkpointed layer runs again in the backward pass"
    for model in (plain, checkpointed):  # frozen parts stay in eval; only the layer flag follows training
        assert model.llm.base_model.model.model.layers[0].mlp.training is False
    grads = {n: p.grad for n, p in plain.named_parameters() if p.requires_grad}
    for name, param in checkpointed.named_parameters():
        if param.requires_grad:
            assert torch.allclose(param.grad, grads[name], atol=1e-6), name
    checkpointed.eval()
    plain.eval()
    prompts = (batch["prompt_input_ids"], batch["prompt_attention_mask"], batch["pixel_values"], batch["image_mask"])
    assert checkpointed.generate(*prompts) == plain.generate(*prompts)
