"""Bad LLM-LoRA configs fail at construction, before any training, naming the field to fix."""

from __future__ import annotations

import pytest

from lit_medxchat.core.tokenizer import train_tokenizer
from lit_medxchat.models.llm_lora import MedXChatLoRA
from lit_medxchat.models.medxchat_options import AdapterOptions, LLMOptions, LoRAOptions, tiny_options
from lit_medxchat.models.visual_adapter import VisionOptions


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(["findings: small left pleural effusion."] * 10, vocab_size=300, out_dir=out)
    return out


def _vision(**changes) -> VisionOptions:
    config = dict(tiny_options()["vision"].config)
    config.update(changes)
    return VisionOptions(config=config)


def _llm(**changes) -> LLMOptions:
    config = dict(tiny_options()["llm"].config)
    config.update(changes)
    return LLMOptions(config=config)


BAD = {
    "unknown vision model type": ({"vision": _vision(model_type="no-such-model")}, r"vision\.config\.model_type"),
    "text model as vision tower": ({"vision": VisionOptions(config={"model_type": "bert", "hidden_size": 32,
                                                                    "num_attention_heads": 2, "num_hidden_layers": 1,
                                                                    "intermediate_size": 64})},
                                   "not a vision backbone"),
    "missing vision folder": ({"vision": VisionOptions(name_or_path="/nonexistent/vision-folder")},
                              r"vision\.name_or_path='/nonexistent/vision-folder'"),
    "image size vs patch size": ({"vision": _vision(image_size=60)},
                                 "image_size=60 is not divisible by patch_size=16"),
    "LLM width vs heads": ({"llm": _llm(num_attention_heads=3)},
                           r"llm\.config\.hidden_size=64 .*num_attention_heads=3"),
    "unknown LLM model type": ({"llm": _llm(model_type="no-such-llm")}, r"llm\.config\.model_type"),
    "LoRA target matching nothing": ({"lora": LoRAOptions(target_modules=["q_proj", "qkv"])},
                                     r"lora\.target_modules=.*\['qkv'\] match no Linear.*v_proj"),
    "adapter width vs heads": ({"adapter": AdapterOptions(num_image_tokens=4, hidden_size=32, num_heads=3)},
                               r"adapter\.hidden_size=32 .*adapter\.num_heads=3"),
    "unknown dtype": ({"llm": LLMOptions(config=_llm().config, frozen_dtype="fp8")}, r"llm\.frozen_dtype='fp8'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_names_the_field(case, tokenizer_dir):
    changes, message = BAD[case]
    options = tiny_options()
    options.update(changes)
    with pytest.raises(ValueError, match=message):
        MedXChatLoRA(str(tokenizer_dir), **options)


def test_missing_tokenizer_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match="RUN/tokenizer"):
        MedXChatLoRA(str(tmp_path / "no-tokenizer"), **tiny_options())
