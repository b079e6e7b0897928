"""`MedXChatLoRA.export_pretrained` writes files that peft and transformers load back to the same model."""

from __future__ import annotations

import json

import torch

from lit_medxchat.core.tokenizer import medxchat_token_ids, train_tokenizer
from lit_medxchat.models.llm_lora import MedXChatLoRA
from lit_medxchat.models.medxchat_options import tiny_options
from lit_medxchat.models.visual_adapter import AdapterOptions, build_visual_adapter


def test_export_round_trip(tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel

    train_tokenizer(["findings: small left pleural effusion. <Xray> PA view </Xray>"] * 10, 300, tmp_path / "tok")
    model = MedXChatLoRA(str(tmp_path / "tok"), **tiny_options()).eval()
    # Give LoRA and the special-token rows non-trivial values, as after training.
    generator = torch.Generator().manual_seed(0)
    for param in model.llm.parameters():
        if param.requires_grad:
            param.data += 0.1 * torch.randn(param.shape, generator=generator)
    written = model.export_pretrained(tmp_path / "export")
    out = tmp_path / "export"
    assert written == [out / "lora", out / "base", out / "merged", out / "vision"]

    image_id, start_id, end_id = medxchat_token_ids(model.tokenizer)
    input_ids = torch.tensor([[1, image_id, 40, 50, start_id, 60, end_id, 2]])
    with torch.no_grad():
        expected = model.llm(input_ids=input_ids).logits

        base = AutoModelForCausalLM.from_pretrained(out / "base")
        base_logits = base(input_ids=input_ids).logits
        peft_model = PeftModel.from_pretrained(base, out / "lora").eval()
        torch.testing.assert_close(peft_model(input_ids=input_ids).logits, expected)

        merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
        torch.testing.assert_close(merged(input_ids=input_ids).logits, expected, atol=1e-5, rtol=1e-4)
        # The merge really carries the update: the base alone differs.
        assert not torch.allclose(base_logits, expected, atol=1e-3)

    tokenizer = AutoTokenizer.from_pretrained(out / "merged")
    assert medxchat_token_ids(tokenizer) == [image_id, start_id, end_id]

    meta = json.loads((out / "vision" / "medxchat.json").read_text())
    assert meta["image_size"] == 64 and meta["adapter"]["num_image_tokens"] == 4
    tower = CLIPVisionModel.from_pretrained(out / "vision" / "vision_tower").eval()
    adapter = build_visual_adapter(
        AdapterOptions(**meta["adapter"]), meta["vision_hidden_size"], meta["llm_hidden_size"]
    )
    adapter.load_state_dict(load_file(out / "vision" / "visual_adapter.safetensors"), strict=True)
    pixels = torch.randn(1, 3, 64, 64, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(adapter.eval()(tower(pixel_values=pixels).last_hidden_state),
                                   model.encode_images(pixels))
    # Exporting leaves the training model untouched (merging works on a copy).
    with torch.no_grad():
        torch.testing.assert_close(model.llm(input_ids=input_ids).logits, expected)
