"""The conversation format: labels only on answers, prompts are prefixes of training sequences, safe truncation."""

from __future__ import annotations

import pytest

from lit_medxchat.core.constants import IMAGE_TOKEN, XRAY_END, XRAY_START
from lit_medxchat.core.conversation import (
    IGNORE_INDEX,
    ConversationTooLongError,
    decode_answer,
    encode_conversation,
    encode_prompt,
    render_image_placeholder,
)

TOKENIZER_TEXTS = [
    "PA view of the chest was obtained. findings: there is a small right pleural effusion.",
    "impression: no acute cardiopulmonary process. Is there a pneumothorax? no.",
    "Human: please write the report for this chest X-ray. AI: lateral view of the chest.",
] * 4
TURNS = [
    {"role": "user", "content": "Please write the report for this chest X-ray."},
    {"role": "assistant", "content": "PA view of the chest was obtained. findings: small right pleural effusion."},
    {"role": "user", "content": "Is there a pneumothorax?"},
    {"role": "assistant", "content": "no."},
]


@pytest.fixture(scope="module", params=["byte-bpe", "llama"])
def tiny_tokenizer(request):
    """Every format test runs with a byte-level BPE and a SentencePiece-style LLaMA tokenizer (pad = eos)."""
    from lit_medxchat.core.tokenizer import train_tokenizer

    return train_tokenizer(TOKENIZER_TEXTS, vocab_size=400, style=request.param)


def _supervised_text(tok, encoded) -> list[str]:
    """Decode each run of labelled positions separately."""
    runs, current = [], []
    for label in encoded.labels:
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(label)
    if current:
        runs.append(current)
    return [tok.decode(run, skip_special_tokens=False) for run in runs]


def test_render_image_placeholder_repeats_the_token_per_image():
    assert render_image_placeholder(2, 3) == IMAGE_TOKEN * 6
    assert render_image_placeholder(0, 3) == ""
    with pytest.raises(ValueError):
        render_image_placeholder(-1, 3)


def test_labels_cover_exactly_the_answers_and_their_eos(tiny_tokenizer):
    tok = tiny_tokenizer
    encoded = encode_conversation(tok, TURNS, num_images=2, num_image_tokens=4, max_length=512)
    assert len(encoded.input_ids) == len(encoded.labels)
    assert not encoded.truncated and encoded.num_turns == 4
    runs = _supervised_text(tok, encoded)
    # a LLaMA decoder drops the leading space of a decoded run; the byte-level one keeps it
    expected = [TURNS[1]["content"] + tok.eos_token, TURNS[3]["content"] + tok.eos_token]
    assert [run.lstrip(" ") for run in runs] == expected
    for token_id, label in zip(encoded.input_ids, encoded.labels, strict=True):
        assert label in (IGNORE_INDEX, token_id)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    positions = [i for i, token_id in enumerate(encoded.input_ids) if token_id == image_id]
    assert len(positions) == 8 and positions == list(range(positions[0], positions[0] + 8))
    text = tok.decode(encoded.input_ids, skip_special_tokens=False)
    assert text.index("Human:") < text.index(IMAGE_TOKEN) < text.index("Please write")


def test_prompt_is_a_prefix_of_the_training_sequence(tiny_tokenizer):
    tok = tiny_tokenizer
    full = encode_conversation(tok, TURNS, num_images=1, num_image_tokens=3, max_length=512)
    for history in (TURNS[:1], TURNS[:3]):
        prompt = encode_prompt(tok, history, num_images=1, num_image_tokens=3, max_length=512)
        assert full.input_ids[: len(prompt)] == prompt
        assert tok.decode(prompt, skip_special_tokens=False).endswith("AI:")
        assert full.labels[len(prompt) - 1] == IGNORE_INDEX and full.labels[len(prompt)] != IGNORE_INDEX


def test_truncation_drops_trailing_turns_and_never_cuts_image_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    full = encode_conversation(tok, TURNS, num_images=1, num_image_tokens=16, max_length=512)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    for max_length in range(len(full.input_ids) - 1, 0, -1):
        try:
            cut = encode_conversation(tok, TURNS, num_images=1, num_image_tokens=16, max_length=max_length)
        except ConversationTooLongError:
            # only when not even one answer token fits after the images
            first_answer = full.labels.index(next(label for label in full.labels if label != IGNORE_INDEX))
            assert max_length <= first_answer
            continue
        assert cut.truncated and len(cut.input_ids) <= max_length
        assert cut.input_ids.count(image_id) == 16
        assert cut.input_ids == full.input_ids[: len(cut.input_ids)]
        assert cut.num_supervised >= 1


def test_t2i_dialogue_without_image_keeps_xray_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    answer = f"Here it is. {XRAY_START} Lateral view of the chest was obtained. {XRAY_END}"
    turns = [{"role": "user", "content": "Draw a lateral chest X-ray with an effusion."},
             {"role": "assistant", "content": answer}]
    encoded = encode_conversation(tok, turns, num_images=0, num_image_tokens=8, max_length=256)
    assert tok.convert_tokens_to_ids(IMAGE_TOKEN) not in encoded.input_ids
    answer_ids = [label for label in encoded.labels if label != IGNORE_INDEX]
    assert decode_answer(tok, answer_ids) == answer


def test_decode_answer_stops_at_eos_and_next_human_turn(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = tok(" no effusion.\nHuman: and now?", add_special_tokens=False)["input_ids"]
    assert decode_answer(tok, ids) == "no effusion."
    ids = tok(" no effusion.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id, 5, 6]
    if tok.pad_token_id != tok.eos_token_id:  # with pad = eos (LLaMA) a leading pad is an EOS: nothing was said
        assert decode_answer(tok, [tok.pad_token_id] + ids) == "no effusion."


def test_bad_inputs_are_rejected_with_a_reason(tiny_tokenizer):
    tok = tiny_tokenizer
    with pytest.raises(ValueError, match="role"):
        encode_conversation(tok, [{"role": "doctor", "content": "x"}], num_images=0, num_image_tokens=1,
                            max_length=64)
    with pytest.raises(ValueError, match="num_images"):
        encode_conversation(tok, [{"role": "user", "content": f"{IMAGE_TOKEN} hi"}], num_images=1,
                            num_image_tokens=1, max_length=64)
    with pytest.raises(ValueError, match="ending with a user turn"):
        encode_prompt(tok, TURNS, num_images=1, num_image_tokens=1, max_length=64)
    with pytest.raises(ConversationTooLongError, match="max_length"):
        encode_conversation(tok, TURNS, num_images=2, num_image_tokens=64, max_length=100)


def test_prompt_drops_oldest_exchanges_first(tiny_tokenizer):
    tok = tiny_tokenizer
    history = TURNS + [{"role": "user", "content": "Anything else?"}]
    full = encode_prompt(tok, history, num_images=1, num_image_tokens=2, max_length=1024)
    short = encode_prompt(tok, history, num_images=1, num_image_tokens=2, max_length=len(full) - 1)
    assert len(short) < len(full)
    text = tok.decode(short, skip_special_tokens=False)
    assert "Anything else?" in text and IMAGE_TOKEN in text and "Please write" not in text


def test_sentencepiece_encoding_has_no_stray_word_marks_between_turns(tiny_tokenizer):
    """Proves: the conversation's ids are one encoding of the rendered text (not turns encoded one by one, which
    gives a LLaMA tokenizer a lone "▁" before every turn, "AI:" and newline): its "▁" marks are the text's spaces."""
    encoded = encode_conversation(tiny_tokenizer, TURNS, num_images=1, num_image_tokens=2, max_length=512)
    text = tiny_tokenizer.decode(encoded.input_ids[1:], skip_special_tokens=False)
    assert encoded.input_ids[1:] == tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    tokens = tiny_tokenizer.convert_ids_to_tokens(encoded.input_ids)
    if "\u2581" in "".join(tokens):  # SentencePiece style: one word mark per space of the text, plus the leading one
        assert sum(token.count("\u2581") for token in tokens) == text.count(" ") + 1, tokens


def test_llama_style_pads_with_eos_and_still_learns_to_stop(tiny_tokenizer):
    """Proves: with pad = eos (LLaMA has no pad token) padding carries no label, every answer's closing EOS does."""
    from datamodules.chat import ChatCollate

    pad = tiny_tokenizer.pad_token_id
    short = encode_conversation(tiny_tokenizer, TURNS[:2], num_images=0, num_image_tokens=2, max_length=512)
    long = encode_conversation(tiny_tokenizer, TURNS, num_images=0, num_image_tokens=2, max_length=512)
    batch = ChatCollate(pad, image_size=8, evaluation=False)([
        {"input_ids": e.input_ids, "labels": e.labels, "pixel_values": [], "task": "vqa", "key": str(i)}
        for i, e in enumerate((short, long))])
    row = batch["labels"][0]
    padded = slice(len(short.input_ids), None)
    assert (row[padded] == IGNORE_INDEX).all() and (batch["input_ids"][0, padded] == pad).all()
    eos_labels = int((batch["labels"] == tiny_tokenizer.eos_token_id).sum())
    assert eos_labels == 3, "one EOS label per complete answer (1 + 2), none on padding"


@pytest.mark.parametrize("num_images", [0, 1, 2])
def test_chat_template_gives_the_ids_of_the_format(tiny_tokenizer, num_images):
    """Proves: `apply_chat_template` with the shipped template prompts exactly as training does, for both tokenizer
    styles: a prompt equals `encode_prompt`, a whole dialogue `encode_conversation` (images by `num_images` or by
    image items in the content list; a given system line replaces the default)."""
    from lit_medxchat.core.conversation import chat_template_for

    template = chat_template_for(tiny_tokenizer, num_image_tokens=3)
    prompt_turns = TURNS[:3]
    expected_prompt = encode_prompt(tiny_tokenizer, prompt_turns, num_images=num_images, num_image_tokens=3,
                                    max_length=4096)
    rendered = tiny_tokenizer.apply_chat_template(prompt_turns, chat_template=template, add_generation_prompt=True,
                                                  tokenize=False, num_images=num_images)
    assert tiny_tokenizer(rendered, add_special_tokens=False)["input_ids"] == expected_prompt

    with_items = [{"role": "system", "content": "You read chest X-rays."},
                  {"role": "user", "content": [*([{"type": "image"}] * num_images),
                                               {"type": "text", "text": TURNS[0]["content"]}]}, *TURNS[1:]]
    expected = encode_conversation(tiny_tokenizer, [with_items[0], TURNS[0], *TURNS[1:]], num_images=num_images,
                                   num_image_tokens=3, max_length=4096).input_ids
    rendered = tiny_tokenizer.apply_chat_template(with_items, chat_template=template, tokenize=False)
    assert tiny_tokenizer(rendered, add_special_tokens=False)["input_ids"] == expected
