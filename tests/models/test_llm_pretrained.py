"""Backbones from folders (the paper-scale path): a full CLIP model folder as the tower, a causal-LM
folder with a smaller vocabulary than the tokenizer (resized), exported without a `base/` copy."""

from __future__ import annotations

import torch

from lit_medxchat.core.tokenizer import medxchat_token_ids, train_tokenizer
from lit_medxchat.models.llm_lora import MedXChatLoRA
from lit_medxchat.models.medxchat_options import LLMOptions, tiny_options
from lit_medxchat.models.visual_adapter import VisionOptions


def test_folders_as_backbones_train_and_export(tmp_path):
    from peft import PeftModel
    from transformers import (
        AutoModelForCausalLM,
        CLIPConfig,
        CLIPModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(
        vision_config={"image_size": 32, "patch_size": 16, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 100, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        projection_dim=16,
    ))
    clip.save_pretrained(tmp_path / "clip")
    LlamaForCausalLM(LlamaConfig(vocab_size=200, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(tmp_path / "llm")
    tokenizer = train_tokenizer(["findings: small left pleural effusion. no pneumothorax."] * 10, 330,
                                tmp_path / "tok")
    assert len(tokenizer) > 200

    options = tiny_options()
    options["vision"] = VisionOptions(name_or_path=str(tmp_path / "clip"), trainable=True)
    options["llm"] = LLMOptions(name_or_path=str(tmp_path / "llm"))
    model = MedXChatLoRA(str(tmp_path / "tok"), **options)
    assert model.llm.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert model.vision_tower.image_size == 32
    # The pretrained tower's weights are the folder's, and `trainable` lets them learn.
    torch.testing.assert_close(model.vision_tower.backbone.embeddings.patch_embedding.weight,
                               clip.vision_model.embeddings.patch_embedding.weight)
    image_id = medxchat_token_ids(tokenizer)[0]
    ids = torch.tensor([[1] + [image_id] * 4 + [40, 41, 2]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone(),
             "pixel_values": torch.randn(1, 1, 3, 32, 32), "image_mask": torch.ones(1, 1, dtype=torch.bool)}
    model(batch).backward()
    assert model.vision_tower.backbone.embeddings.patch_embedding.weight.grad is not None

    written = model.export_pretrained(tmp_path / "export")
    assert tmp_path / "export" / "base" not in written  # the base is named by llm.name_or_path
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "llm")
    base.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        loaded = PeftModel.from_pretrained(base, tmp_path / "export" / "lora").eval()
        # Rows the resize adds are drawn at random (ours and the user's differ) except the three MedXChat
        # rows, which the adapter carries: compare the folder's 200-token vocabulary plus those three.
        keep = list(range(200)) + medxchat_token_ids(tokenizer)
        plain_ids = torch.tensor([[1, 40, 41, 2] + medxchat_token_ids(tokenizer)[1:]])
        torch.testing.assert_close(loaded(input_ids=plain_ids).logits[..., keep],
                                   model.llm(input_ids=plain_ids).logits[..., keep])
