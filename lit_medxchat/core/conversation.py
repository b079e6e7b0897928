"""The one conversation format of MedXChat, shared by training (chat DataModule) and inference (chat pipeline).

mPLUG-Owl-like plain text: a system line, then "Human: ..." / "AI: ..." turns, the image tokens at the
start of the first human turn. The whole conversation is rendered as text and tokenised in one call (labels
follow from character offsets), so a SentencePiece tokenizer sees it as it saw its pretraining text (no stray
"▁" between turns), and the ids of a prompt are exactly a prefix of the ids of the whole conversation: what
the model sees at inference is what it was trained on, token for token.

Rendered (each ``<image>`` stands for ``num_image_tokens`` copies per image, ``</s>`` is the tokenizer's EOS)::

    <s>The following is a conversation ... questions.
    Human:<image>...<image>
    What does the X-ray show?
    AI: PA view of the chest was obtained. findings: ...</s>Human: Is there an effusion?
    AI: no</s>

Labels are -100 everywhere except the assistant turns' text and the EOS closing each of them: the
training loss is computed on the responses only (paper §3.3).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lit_medxchat.core.constants import IMAGE_TOKEN, XRAY_END, XRAY_START

IGNORE_INDEX = -100
# Batch key: this rank's supervised tokens over the batch's whole optimiser step (the loss's denominator).
STEP_ANSWER_TOKENS = "step_answer_tokens"
SYSTEM_PROMPT = (
    "The following is a conversation between a curious human and an AI assistant that reads chest X-rays. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
HUMAN_PREFIX = "Human: "
AI_PREFIX = "AI:"
ROLES = ("system", "user", "assistant")


class ConversationTooLongError(ValueError):
    """The system line, the image tokens and the first exchange do not fit in `max_length` tokens."""


@dataclass
class EncodedConversation:
    """Token ids of one conversation and its training labels.

    `labels[i]` is `input_ids[i]` on assistant-turn tokens (and the EOS closing each complete assistant
    turn), -100 elsewhere. `truncated` is True when trailing turns were dropped or the last assistant turn
    was cut to fit `max_length` (a cut turn gets no EOS: the model must not learn to stop there).
    """

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    num_turns: int = 0

    @property
    def num_supervised(self) -> int:
        """How many positions carry a label; 0 means the sample teaches nothing."""
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def supervised_tokens(labels: Any) -> int:
    """Positions a causal LM is trained on in a (B, L) label batch: labels after the shift, not -100."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def render_image_placeholder(num_images: int, num_image_tokens: int) -> str:
    """`IMAGE_TOKEN` repeated `num_image_tokens` times per image, images back to back (text form)."""
    if num_images < 0 or num_image_tokens < 0:
        raise ValueError(f"num_images ({num_images}) and num_image_tokens ({num_image_tokens}) must be >= 0")
    return IMAGE_TOKEN * (num_images * num_image_tokens)


def _special_id(tokenizer: Any, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == getattr(tokenizer, "unk_token_id", None):
        raise ValueError(
            f"tokenizer has no {token!r} token; add the special tokens {IMAGE_TOKEN!r}, {XRAY_START!r}, "
            f"{XRAY_END!r} (lit_medxchat.core.tokenizer builds tokenizers that have them)"
        )
    return int(token_id)


def _eos_id(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos token; set `eos_token` when building it")
    return int(tokenizer.eos_token_id)


def _check_turns(turns: Sequence[dict]) -> None:
    for index, turn in enumerate(turns):
        role = turn.get("role")
        if role not in ROLES:
            raise ValueError(f"turn {index} has role {role!r}; expected one of {ROLES}")
        if role == "system" and index != 0:
            raise ValueError(f"turn {index} is a system turn; only the first turn may be one")
        if IMAGE_TOKEN in str(turn.get("content", "")):
            raise ValueError(
                f"turn {index} contains {IMAGE_TOKEN!r} in its text; pass the image count as `num_images` "
                "instead: the format places image tokens itself"
            )


@dataclass(frozen=True)
class _Piece:
    """A stretch of the rendered conversation: `kind` is head, user, prefix ("AI:"), answer or eos."""

    text: str
    kind: str
    turn: int = -1


def _split_system(turns: Sequence[dict]) -> tuple[str, list[dict]]:
    if turns and turns[0]["role"] == "system":
        return str(turns[0]["content"]), list(turns[1:])
    return SYSTEM_PROMPT, list(turns)


def _user_text(content: str, images: str) -> str:
    # No space before the image tokens: a SentencePiece tokenizer would make it a lone "▁" token.
    return f"{HUMAN_PREFIX.rstrip()}{images}\n{content}\n" if images else f"{HUMAN_PREFIX}{content}\n"


def _render(tokenizer: Any, system: str, turns: Sequence[dict], images: str, close_last: bool) -> list[_Piece]:
    """The conversation as text pieces; the images go into the first user turn. `close_last=False` ends with
    the "AI:" prefix of the answer to generate (a prompt)."""
    eos = tokenizer.eos_token
    pieces = [_Piece(system + "\n", "head")]
    images_placed = False
    for index, turn in enumerate(turns):
        content = str(turn["content"])
        if turn["role"] == "user":
            pieces.append(_Piece(_user_text(content, "" if images_placed else images), "user", index))
            images_placed = True
        else:
            pieces += [_Piece(AI_PREFIX, "prefix", index), _Piece(" " + content, "answer", index),
                       _Piece(eos, "eos", index)]
    if not close_last:
        pieces.append(_Piece(AI_PREFIX, "prefix", len(turns)))
    return pieces


def _tokenize(tokenizer: Any, pieces: Sequence[_Piece]) -> list[list[int]]:
    """Token ids of each piece, from ONE tokenizer call over the whole text.

    Why one call: a SentencePiece tokenizer (LLaMA's) prepends "▁" to every text it is given, so pieces encoded
    one by one carry stray "▁" tokens the base model never saw ("AI:" -> "▁", "A", "I:"; "\n" -> "▁", "\n").
    Each token goes to the piece where its first character is; the format's pieces start at word or special-token
    boundaries, so a prompt's ids are exactly the start of the whole conversation's (tested with byte-level BPE
    and SentencePiece tokenizers).
    """
    starts, position = [], 0
    for piece in pieces:
        starts.append(position)
        position += len(piece.text)
    text = "".join(piece.text for piece in pieces)
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as error:
        raise ValueError(
            f"{type(tokenizer).__name__} gives no character offsets: use a fast (tokenizers-backed) tokenizer"
        ) from error
    ids: list[list[int]] = [[] for _ in pieces]
    for token_id, (begin, _) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
        ids[bisect.bisect_right(starts, begin) - 1].append(int(token_id))
    return ids


def _bos(tokenizer: Any) -> list[int]:
    return [int(tokenizer.bos_token_id)] if tokenizer.bos_token_id is not None else []


def _image_text(tokenizer: Any, num_images: int, num_image_tokens: int) -> str:
    placeholder = render_image_placeholder(num_images, num_image_tokens)  # validates the counts
    if placeholder:
        _special_id(tokenizer, IMAGE_TOKEN)  # a clear error when the tokenizer lacks it
    return placeholder


def encode_conversation(
    tokenizer: Any,
    turns: list[dict],
    *,
    num_images: int,
    num_image_tokens: int,
    max_length: int,
) -> EncodedConversation:
    """Tokenise a whole dialogue for training.

    Args:
        tokenizer: a fast tokenizer holding `<image>`, `<Xray>`, `</Xray>` and an EOS token.
        turns: `{"role": "system"|"user"|"assistant", "content": str}` dicts (extra keys are ignored).
        num_images: images of the sample (0 for text-to-CXR dialogues); their tokens go into the first
            user turn.
        num_image_tokens: tokens per image (the visual adapter's number of queries).
        max_length: hard cap on the sequence length. Trailing turns are dropped, or the last assistant turn
            cut, to fit; the image tokens are never cut.

    Raises:
        ConversationTooLongError: the system line, the images, the first user turn and one answer token do
            not fit (raise `max_length` or shorten the prompt).
    """
    _check_turns(turns)
    _eos_id(tokenizer)
    images = _image_text(tokenizer, num_images, num_image_tokens)
    system, rest = _split_system(turns)
    if images and not any(turn["role"] == "user" for turn in rest):
        raise ValueError(f"{num_images} image(s) given but the dialogue has no user turn to hold them")
    pieces = _render(tokenizer, system, rest, images, close_last=True)
    piece_ids = _tokenize(tokenizer, pieces)
    input_ids = _bos(tokenizer) + piece_ids[0]
    labels = [IGNORE_INDEX] * len(input_ids)
    image_count = num_images * num_image_tokens

    truncated, kept, images_placed, index = False, 0, False, 1
    while index < len(pieces):
        piece, ids = pieces[index], piece_ids[index]
        if piece.kind == "user":
            if len(input_ids) + len(ids) > max_length:
                if not images_placed and images:
                    raise ConversationTooLongError(
                        f"the first user turn with {image_count} image tokens needs {len(input_ids) + len(ids)} "
                        f"tokens, more than max_length={max_length}; raise max_length"
                    )
                truncated = True
                break
            images_placed = images_placed or bool(images)
            input_ids += ids
            labels += [IGNORE_INDEX] * len(ids)
            index += 1
        else:  # "AI:", the answer, its EOS
            prefix, body = ids, piece_ids[index + 1] + piece_ids[index + 2]
            room = max_length - len(input_ids) - len(prefix)
            if room < len(body):
                truncated = True
                if room >= 1:
                    input_ids += prefix + body[:room]
                    labels += [IGNORE_INDEX] * len(prefix) + body[:room]
                    kept = piece.turn + 1
                break
            input_ids += prefix + body
            labels += [IGNORE_INDEX] * len(prefix) + body
            index += 3
        kept = piece.turn + 1

    if images and not images_placed:
        raise ConversationTooLongError(f"the image tokens do not fit in max_length={max_length}; raise max_length")
    result = EncodedConversation(input_ids=input_ids, labels=labels, truncated=truncated, num_turns=kept)
    if result.num_supervised == 0:
        raise ConversationTooLongError(
            f"no assistant token fits in max_length={max_length} ({len(input_ids)} prompt tokens); raise max_length"
        )
    return result


def encode_prompt(
    tokenizer: Any,
    turns: list[dict],
    *,
    num_images: int,
    num_image_tokens: int,
    max_length: int,
) -> list[int]:
    """Token ids of the conversation up to and including the "AI:" prefix of the answer to generate.

    `turns` is the history and ends with the user turn to answer. The ids equal the start of
    `encode_conversation` of the same history plus the answer. When the history does not fit, the oldest
    exchanges are dropped (the images move to the first kept user turn); the last user turn is never cut.
    """
    _check_turns(turns)
    _eos_id(tokenizer)
    system, rest = _split_system(turns)
    if not rest or rest[-1]["role"] != "user":
        raise ValueError("encode_prompt needs a history ending with a user turn (the question to answer)")
    images = _image_text(tokenizer, num_images, num_image_tokens)
    starts = [index for index, turn in enumerate(rest) if turn["role"] == "user"]
    for start in starts:
        pieces = _render(tokenizer, system, rest[start:], images, close_last=False)
        ids = _bos(tokenizer) + [token for piece in _tokenize(tokenizer, pieces) for token in piece]
        if len(ids) <= max_length:
            return ids
    raise ConversationTooLongError(
        f"the last user turn with {num_images * num_image_tokens} image tokens needs {len(ids)} tokens, more than "
        f"max_length={max_length}; raise max_length or shorten the question"
    )


def chat_template(num_image_tokens: int, after_bos: str = "") -> str:
    """A Jinja `chat_template` that renders this format for `tokenizer.apply_chat_template`.

    Why: an exported model (`lit-medxchat export`, `merged/`) is used from plain transformers, whose users prompt it
    through `apply_chat_template`; without the format the model never saw its prompt and babbles. The template
    gives the ids of `encode_prompt` (with `add_generation_prompt=True`) and of `encode_conversation` (a whole
    dialogue), token for token. Images: `num_images=N` as a template argument, or `{"type": "image"}` items in a
    message's content list (text items are joined); each image is `num_image_tokens` `<image>` tokens in the first
    user turn. Older turns are not dropped to fit a length, as `encode_prompt` does. `after_bos`: text between the
    BOS token and the system line (`chat_template_for` picks what makes the ids equal for a tokenizer).
    """
    import json

    system = json.dumps(SYSTEM_PROMPT)
    image = json.dumps(IMAGE_TOKEN * num_image_tokens)
    human, ai = json.dumps(HUMAN_PREFIX), json.dumps(AI_PREFIX)
    return (
        "{%- set ns = namespace(images=num_images if num_images is defined else 0, placed=false) -%}"
        "{%- for message in messages -%}{%- if message['content'] is not string -%}"
        "{%- for item in message['content'] -%}{%- if item['type'] == 'image' -%}"
        "{%- set ns.images = ns.images + 1 -%}{%- endif -%}{%- endfor -%}{%- endif -%}{%- endfor -%}"
        "{%- if messages and messages[0]['role'] == 'system' -%}{%- set system = messages[0]['content'] -%}"
        "{%- set turns = messages[1:] -%}{%- else -%}{%- set system = " + system + " -%}"
        "{%- set turns = messages -%}{%- endif -%}"
        "{{- bos_token + " + json.dumps(after_bos) + " if bos_token else '' -}}{{- system + '\n' -}}"
        "{%- for message in turns -%}"
        "{%- if message['content'] is string -%}{%- set text = message['content'] -%}{%- else -%}"
        "{%- set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text')"
        " | join('') -%}{%- endif -%}"
        "{%- if message['role'] == 'user' -%}"
        "{%- if not ns.placed and ns.images > 0 -%}"
        "{{- " + human + ".rstrip() + " + image + " * ns.images + '\n' + text + '\n' -}}"
        "{%- else -%}{{- " + human + " + text + '\n' -}}{%- endif -%}{%- set ns.placed = true -%}"
        "{%- else -%}{{- " + ai + " + ' ' + text + eos_token -}}{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- " + ai + " -}}{%- endif -%}"
    )


def chat_template_for(tokenizer: Any, num_image_tokens: int) -> str:
    """`chat_template` for `tokenizer`, checked: `apply_chat_template` gives `encode_prompt`'s ids on a probe.

    Why a check: a SentencePiece tokenizer marks the start of a text with "▁", but text right after a special
    token (the BOS the template writes) gets no mark, so LLaMA-style tokenizers need a space after BOS where
    byte-level BPE must not have one. Raises ValueError when neither renders the format exactly.
    """
    turns = [{"role": "user", "content": "Is there an effusion?"}, {"role": "assistant", "content": "yes"},
             {"role": "user", "content": "Where?"}]
    expected = encode_prompt(tokenizer, turns, num_images=1, num_image_tokens=num_image_tokens, max_length=1 << 20)
    for after_bos in ("", " "):
        template = chat_template(num_image_tokens, after_bos)
        rendered = tokenizer.apply_chat_template(turns, chat_template=template, add_generation_prompt=True,
                                                 tokenize=False, num_images=1)
        if tokenizer(rendered, add_special_tokens=False)["input_ids"] == expected:
            return template
    raise ValueError(f"no chat template renders the conversation format exactly for {type(tokenizer).__name__}")


def decode_answer(tokenizer: Any, token_ids: Sequence[int] | Any) -> str:
    """Text of a generated answer: up to the first EOS, without BOS/pad/image tokens, stopped at "Human:".

    `<Xray>` / `</Xray>` are kept: the chat pipeline extracts the text-to-CXR prompt between them.
    """
    if hasattr(token_ids, "tolist"):
        token_ids = token_ids.tolist()
    eos = tokenizer.eos_token_id
    dropped = {tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)}
    kept: list[int] = []
    for token_id in token_ids:
        token_id = int(token_id)
        if token_id == eos:
            break
        if token_id not in dropped:
            kept.append(token_id)
    text = tokenizer.decode(kept, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    stop = text.find(HUMAN_PREFIX.strip())
    if stop >= 0:
        text = text[:stop]
    return text.strip()
