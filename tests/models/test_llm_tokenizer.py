"""The locally trained tokenizer: reloads through AutoTokenizer, keeps <Xray> on decode, pads left."""

from __future__ import annotations

import pytest

from lit_medxchat.core.constants import IMAGE_TOKEN, XRAY_END, XRAY_START
from lit_medxchat.core.tokenizer import add_medxchat_tokens, medxchat_token_ids, train_tokenizer

TEXTS = [
    "PA view of the chest was obtained. findings: small left pleural effusion. impression: effusion.",
    "Lateral view of the chest was obtained. findings: no pneumothorax. impression: no acute process.",
] * 20


def test_trained_tokenizer_round_trips_through_auto_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    tok = train_tokenizer(TEXTS, vocab_size=300, out_dir=tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = f"{IMAGE_TOKEN}{IMAGE_TOKEN} Draw it: {XRAY_START} PA view of the chest. {XRAY_END} ok"
    assert loaded(text).input_ids == tok(text).input_ids
    assert len(loaded) == len(tok) <= 300
    assert loaded.padding_side == "left"
    assert medxchat_token_ids(loaded) == medxchat_token_ids(tok)


def test_special_tokens_are_atomic_and_xray_survives_decoding(tmp_path):
    tok = train_tokenizer(TEXTS, vocab_size=300)
    image_id, start_id, end_id = medxchat_token_ids(tok)
    ids = tok(f"{IMAGE_TOKEN}{IMAGE_TOKEN}see {XRAY_START}PA view{XRAY_END}").input_ids
    assert ids[:2] == [image_id, image_id]
    assert ids.count(start_id) == 1 and ids.count(end_id) == 1
    decoded = tok.decode(ids, skip_special_tokens=True)
    assert decoded == f"see {XRAY_START}PA view{XRAY_END}"
    # Unseen characters still encode (byte-level alphabet) and decode back unchanged.
    assert tok.decode(tok("Größe 3 cm ±").input_ids) == "Größe 3 cm ±"


def test_left_padding_and_distinct_pad_eos(tmp_path):
    tok = train_tokenizer(TEXTS, vocab_size=300)
    batch = tok(["effusion", "no acute process"], padding=True)
    assert batch["attention_mask"][0][0] == 0 and batch["attention_mask"][0][-1] == 1
    assert len({tok.pad_token_id, tok.eos_token_id, tok.bos_token_id}) == 3


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(TEXTS, vocab_size=100)
    with pytest.raises(ValueError, match="no texts"):
        train_tokenizer([], vocab_size=300)


def test_add_tokens_is_idempotent():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    before = len(tok)
    assert add_medxchat_tokens(tok) == medxchat_token_ids(tok)
    assert len(tok) == before


def test_llama_style_loads_as_llamas_tokenizer_with_pad_eos_and_byte_fallback(tmp_path):
    """Proves: `--style llama` gives what the paper config's LLaMA tokenizer is in transformers: a `LlamaTokenizer`
    ("▁" word marks, byte fallback for unseen characters, no pad token so pad = eos) with the MedXChat tokens."""
    from transformers import AutoTokenizer, LlamaTokenizer

    from datamodules.tokenizer_cli import main as tokenizer_main

    with pytest.raises(SystemExit):  # the CLI offers exactly the two styles
        tokenizer_main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "tok"), "--style", "word-piece"])
    train_tokenizer(TEXTS, vocab_size=400, out_dir=tmp_path / "tok", style="llama")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert isinstance(reloaded, LlamaTokenizer)
    assert reloaded.pad_token_id == reloaded.eos_token_id and reloaded.padding_side == "left"
    assert len(medxchat_token_ids(reloaded)) == 3
    tokens = reloaded.tokenize("the lungs ø")
    assert tokens[0].startswith("\u2581") and "<0xC3>" in tokens, tokens  # an unseen character falls back to bytes
    assert reloaded.decode(reloaded("the lungs ø", add_special_tokens=False)["input_ids"]) == "the lungs ø"
    with pytest.raises(ValueError, match="not a tokenizer style"):
        train_tokenizer(TEXTS, vocab_size=400, style="word-piece")
