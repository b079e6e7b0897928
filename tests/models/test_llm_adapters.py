"""The adapter options that keep image tokens image-dependent, and image-contrastive decoding."""

from __future__ import annotations

import json

import pytest
import torch
from test_llm_lora import DIALOGUES, NUM_IMAGE_TOKENS, chat_batch, make_model, tokenizer_dir  # noqa: F401

from lit_medxchat.models.causal_lm import embedding_rms
from lit_medxchat.models.medxchat_options import AdapterOptions, VisionOptions
from lit_medxchat.models.visual_adapter import build_vision_tower, build_visual_adapter

RESNET = {"model_type": "resnet", "image_size": 64, "embedding_size": 8, "hidden_sizes": [8, 8, 16, 16],
          "depths": [1, 1, 1, 1]}


def test_embedding_scale_matching_starts_image_tokens_at_the_scale_of_words(tokenizer_dir):  # noqa: F811
    model = make_model(tokenizer_dir).eval()
    batch = chat_batch(model.tokenizer, DIALOGUES[:1])
    with torch.no_grad():
        visual = model.encode_images(batch["pixel_values"][:, 0])
    rms = float(visual.pow(2).mean().sqrt())
    assert rms == pytest.approx(embedding_rms(model.llm), rel=1e-3)
    unmatched = make_model(tokenizer_dir, adapter=AdapterOptions(num_image_tokens=NUM_IMAGE_TOKENS, hidden_size=32,
                                                                  num_layers=1, num_heads=2,
                                                                  match_embedding_scale=False)).eval()
    with torch.no_grad():
        loud = unmatched.encode_images(batch["pixel_values"][:, 0])
    assert float(loud.pow(2).mean().sqrt()) > 3 * rms  # what a from-scratch adapter hands the LLM otherwise


@pytest.mark.parametrize("kind", ["mlp", "vocabulary"])
def test_per_token_adapters_follow_the_image_and_train(tokenizer_dir, kind):  # noqa: F811
    vision = VisionOptions(config=RESNET, pooled_token=True)  # 2x2 map + pooled = 5 tokens at 64 px
    model = make_model(tokenizer_dir, vision=vision,
                       adapter=AdapterOptions(kind=kind, num_image_tokens=5, hidden_size=32, lr_scale=3.0))
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = model.encode_images(pixels)
    assert tokens.shape == (2, 5, 64) and not torch.allclose(tokens[0], tokens[1])
    optimizer = model.configure_optimizers()[0][0]
    lrs = sorted(group["lr"] for group in optimizer.param_groups)
    assert lrs[1] == pytest.approx(3 * lrs[0])  # the adapter's own learning rate
    if kind == "vocabulary":  # each token is a convex mixture of the LLM's own word embeddings
        vocabulary = model.llm.get_input_embeddings().weight
        assert tokens.abs().max() <= vocabulary.abs().max() + 1e-6
        assert not any(p is vocabulary for p in model.adapter.parameters())


def test_mlp_adapter_names_the_token_count_it_needs():
    adapter = build_visual_adapter(AdapterOptions(kind="mlp", num_image_tokens=8, hidden_size=16), 16, 32)
    with pytest.raises(ValueError, match="num_image_tokens to 17"):
        adapter(torch.randn(1, 17, 16))
    with pytest.raises(ValueError, match="adapter.kind"):
        build_visual_adapter(AdapterOptions(kind="perceiver"), 16, 32)


def test_pooled_token_and_the_exported_input_size(tmp_path):
    from transformers import ResNetConfig, ResNetForImageClassification

    ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])).save_pretrained(
        tmp_path
    )
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 96, "width": 96}}))
    tower = build_vision_tower(VisionOptions(name_or_path=str(tmp_path), pooled_token=True))
    assert tower.image_size == 96  # the pipeline prepares images at the size the tower was trained at
    features = tower(torch.randn(2, 3, 96, 96))
    assert features.shape == (2, 12 * 12 + 1, 16)  # 96 px / 4 (stem) / 2 (second stage)
    torch.testing.assert_close(features[:, -1], features[:, :-1].mean(1))  # ResNet's pooled output: the mean


def test_image_contrast_zero_is_greedy_and_positive_contrast_depends_on_the_image(tokenizer_dir):  # noqa: F811
    model = make_model(tokenizer_dir).eval()
    batch = chat_batch(model.tokenizer)
    args = (batch["prompt_input_ids"], batch["prompt_attention_mask"], batch["pixel_values"], batch["image_mask"])
    greedy = model.generate(*args)
    assert model.generate(*args, image_contrast=1e-6) == greedy
    with pytest.raises(ValueError, match="num_beams=1"):
        model.generate(*args, image_contrast=1.0, num_beams=2)
