"""The vision tower accepts CLIP configs and any transformers vision backbone folder (ViT, ResNet)."""

from __future__ import annotations

import json

import torch

from lit_medxchat.models.visual_adapter import (
    AdapterOptions,
    VisionOptions,
    build_vision_tower,
    build_visual_adapter,
)


def test_clip_config_tower_is_frozen_and_gives_patch_tokens():
    tower = build_vision_tower(VisionOptions(config={"image_size": 64, "patch_size": 16, "hidden_size": 32,
                                                     "intermediate_size": 64, "num_hidden_layers": 1,
                                                     "num_attention_heads": 2}))
    features = tower(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, 16 + 1, 32)  # 4x4 patches + CLS
    assert tower.image_size == 64 and not tower.training
    assert not any(p.requires_grad for p in tower.parameters())
    trainable = build_vision_tower(VisionOptions(config={"image_size": 64, "patch_size": 16, "hidden_size": 32,
                                                         "intermediate_size": 64, "num_hidden_layers": 1,
                                                         "num_attention_heads": 2}, trainable=True))
    assert all(p.requires_grad for p in trainable.parameters())


def test_resnet_classifier_folder_becomes_a_token_sequence(tmp_path):
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=14)
    ResNetForImageClassification(config).save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.25] * 3,
                                                                    "size": {"height": 64, "width": 64}}))
    tower = build_vision_tower(VisionOptions(name_or_path=str(tmp_path)))
    features = tower(torch.randn(2, 3, 64, 64))
    # 64 px / 4 (stem) / 2 (second stage) = 8x8 map of 16 channels -> 64 tokens
    assert features.shape == (2, 64, 16)
    assert tower.hidden_size == 16 and tower.image_mean == (0.5, 0.5, 0.5) and tower.image_std == (0.25,) * 3
    adapter = build_visual_adapter(AdapterOptions(num_image_tokens=3, hidden_size=16, num_layers=1, num_heads=2),
                                   tower.hidden_size, 48)
    assert adapter(features).shape == (2, 3, 48)


def test_vit_folder_with_other_image_size(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=32, patch_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_labels=4)
    ViTForImageClassification(config).save_pretrained(tmp_path)
    tower = build_vision_tower(VisionOptions(name_or_path=str(tmp_path)))
    assert tower(torch.randn(1, 3, 32, 32)).shape == (1, 5, 32)
    # position embeddings are interpolated for other sizes
    assert tower(torch.randn(1, 3, 64, 64)).shape == (1, 17, 32)
