"""`MedXChatLoRA.export_pretrained` writes files that peft and transformers load back to the same model."""

from __future__ import annotations

import json

import torch

from lit_medxchat.core.tokenizer import medxchat_token_ids, train_tokenizer
from lit_medxchat.models.llm_lora import MedXChatLoRA
from lit_medxchat.models.medxchat_options import tiny_options
from lit_medxchat.models.visual_adapter import AdapterOptions, build_visual_adapter


def _as_after_training(tmp_path, seed: int) -> tuple[MedXChatLoRA, torch.Generator]:
    """A tiny chat model whose LoRA and special-token rows hold non-trivial values, as after training; the
    generator that drew them, for further draws."""
    train_tokenizer(["findings: small left pleural effusion. <Xray> PA view </Xray>"] * 10, 300, tmp_path / "tok")
    model = MedXChatLoRA(str(tmp_path / "tok"), **tiny_options()).eval()
    generator = torch.Generator().manual_seed(seed)
    for param in model.llm.parameters():
        if param.requires_grad:
            param.data += 0.1 * torch.randn(param.shape, generator=generator)
    return model, generator


def test_export_round_trip(tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel

    model, generator = _as_after_training(tmp_path, seed=0)
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


def test_exported_model_answers_a_text_to_cxr_request_from_plain_transformers(tmp_path):
    """Proves: `merged/` carries the conversation format as its chat template, so a user of plain transformers
    (`apply_chat_template` + `generate`) prompts the model with the training ids and gets the chat model's answer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lit_medxchat.core.conversation import decode_answer, encode_prompt

    model, _ = _as_after_training(tmp_path, seed=1)
    model.export_pretrained(tmp_path / "export")
    request = [{"role": "user", "content": "Generate a lateral chest X-ray showing a small left pleural effusion."}]

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "export" / "merged")
    prompt = tokenizer.apply_chat_template(request, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)["input_ids"]
    expected = encode_prompt(model.tokenizer, request, num_images=0, num_image_tokens=4, max_length=512)
    assert prompt[0].tolist() == expected
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "export" / "merged").eval()
    with torch.no_grad():
        generated = merged.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8,
                                    do_sample=False, num_beams=1)
    answer = decode_answer(tokenizer, generated[0, prompt.shape[1]:])
    ours = model.generate(prompt, torch.ones_like(prompt), max_new_tokens=8, num_beams=1)[0]
    assert answer and answer == ours
    assert model.tokenizer.chat_template is None  # the run's tokenizer is left as it was
