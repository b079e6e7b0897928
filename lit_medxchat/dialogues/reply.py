"""Parse and validate an LLM reply into text-to-CXR dialogues; reject anything malformed.

A rejected reply raises `MalformedReply` naming the first problem; the builder then falls back
to the rule dialogues. Accepted dialogues are normalised: roles "human"/"gpt" become
"user"/"assistant", and the image block is written `<Xray> ... </Xray>` with single spaces.
"""

from __future__ import annotations

import json
import re

from lit_medxchat.core.constants import IMAGE_TOKEN, VIEW_SENTENCES, XRAY_END, XRAY_START

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
_BLOCK = re.compile(re.escape(XRAY_START) + r"(.*?)" + re.escape(XRAY_END), re.DOTALL)
_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}
_VIEW_PREFIXES = {sentence.rstrip(".").lower(): view for view, sentence in VIEW_SENTENCES.items()}
# Views a user can ask for, as they write them ("PA" and "AP" only in capitals: "pa" is a word).
_ASKED_VIEWS = (
    ("PA", re.compile(r"\bPA\b")),
    ("PA", re.compile(r"\bpostero-?anterior\b", re.IGNORECASE)),
    ("AP", re.compile(r"\bAP\b")),
    ("AP", re.compile(r"\bantero-?posterior\b", re.IGNORECASE)),
    ("LATERAL", re.compile(r"\blateral\b", re.IGNORECASE)),
)


class MalformedReply(ValueError):
    """The reply cannot be used as training dialogues; the message says why."""


def _load(text: str) -> object:
    match = _FENCE.match(text)
    if match:
        text = match.group(1)
    try:
        return json.loads(text)
    except ValueError:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            raise MalformedReply("reply holds no JSON object") from None
        try:
            return json.loads(text[start : end + 1])
        except ValueError as error:
            raise MalformedReply(f"reply is not valid JSON ({error})") from None


def asked_views(text: str) -> set[str]:
    """The views a user's words ask for ("a lateral view", "PA", "posteroanterior")."""
    return {view for view, pattern in _ASKED_VIEWS if pattern.search(text)}


def _normalise_blocks(content: str, where: str, asked: set[str]) -> tuple[str, int]:
    """Content with image blocks respaced, and how many blocks it has; checks each block's prompt.

    `asked`: the views the user has named so far; when exactly one, every block must be of it.
    """
    blocks = _BLOCK.findall(content)
    if content.count(XRAY_START) != len(blocks) or content.count(XRAY_END) != len(blocks):
        raise MalformedReply(f"{where}: unbalanced {XRAY_START}/{XRAY_END} tags")
    for inner in blocks:
        prompt = " ".join(inner.split())
        prefix = next((p for p in _VIEW_PREFIXES if prompt.lower().startswith(p)), None)
        if prefix is None:
            raise MalformedReply(f"{where}: image prompt does not start with a view sentence: {prompt[:60]!r}")
        if not prompt[len(prefix) :].strip(" ."):
            raise MalformedReply(f"{where}: image prompt has a view sentence but no findings")
        if len(asked) == 1 and _VIEW_PREFIXES[prefix] not in asked:
            raise MalformedReply(f"{where}: the user asked for the {asked.pop()} view, the image prompt is {prefix!r}")
    content = _BLOCK.sub(lambda m: f"{XRAY_START} {' '.join(m.group(1).split())} {XRAY_END}", content)
    return content, len(blocks)


def _dialogue(raw: object, index: int) -> dict:
    where = f"dialogue {index}"
    if not isinstance(raw, dict):
        raise MalformedReply(f"{where}: not an object")
    task = raw.get("task", "t2i")
    if task != "t2i":
        raise MalformedReply(f"{where}: task {task!r}, expected 't2i'")
    turns = raw.get("turns")
    if not isinstance(turns, list) or len(turns) < 2 or len(turns) % 2:
        raise MalformedReply(f"{where}: 'turns' must be a list of user/assistant pairs")
    out = []
    asked: set[str] = set()
    for k, turn in enumerate(turns):
        at = f"{where} turn {k}"
        if not isinstance(turn, dict):
            raise MalformedReply(f"{at}: not an object")
        role = _ROLES.get(str(turn.get("role", "")).lower())
        expected = "user" if k % 2 == 0 else "assistant"
        if role != expected:
            raise MalformedReply(f"{at}: role {turn.get('role')!r}, expected {expected!r}")
        content = turn.get("content")
        if not isinstance(content, str) or not content.strip():
            raise MalformedReply(f"{at}: empty content")
        if IMAGE_TOKEN in content:
            raise MalformedReply(f"{at}: contains {IMAGE_TOKEN}")
        if role == "user":
            asked |= asked_views(content)
        content, blocks = _normalise_blocks(content.strip(), at, set(asked))
        if role == "user" and blocks:
            raise MalformedReply(f"{at}: the user turn contains an image block")
        if role == "assistant" and blocks > 1:
            raise MalformedReply(f"{at}: {blocks} image blocks, expected at most one")
        if role == "assistant" and k == len(turns) - 1 and blocks != 1:
            raise MalformedReply(f"{at}: the last answer must contain exactly one {XRAY_START}...{XRAY_END}")
        out.append({"role": role, "content": content})
    return {"task": "t2i", "turns": out}


def parse_reply(text: str) -> list[dict]:
    """Validated text-to-CXR dialogues from the LLM's reply; raises `MalformedReply`."""
    data = _load(text)
    if isinstance(data, dict):
        data = data.get("dialogues")
    if not isinstance(data, list) or not data:
        raise MalformedReply("reply has no non-empty 'dialogues' list")
    return [_dialogue(raw, index) for index, raw in enumerate(data)]
