"""Tokens from `generate` -> the answer text so far, for answers that appear as they are written.

`MedXChatModel.generate` hands its `**overrides` to the LLM's `generate`, so a streamer passed through
`MedXChatPipeline(..., streamer=...)` sees every new token. The text is decoded with the pipeline's
own `decode_answer` (BOS/pad/`<image>` removed, `<Xray>` kept, cut at "Human:"), so the last partial
text equals the final answer. transformers streams greedy and sampled decoding only, not beam search.
"""

from __future__ import annotations

import queue
from typing import Any

from transformers.generation.streamers import BaseStreamer

GENERATION_DONE = object()  # put on the queue after the last token


class AnswerStreamer(BaseStreamer):
    """Puts the decoded answer so far on `updates` whenever it changes, then `GENERATION_DONE`.

    For one prompt at a time (batch size 1). The first `put` is the prompt (empty with
    `inputs_embeds`) and is skipped.
    """

    def __init__(self, tokenizer: Any, updates: queue.Queue) -> None:
        self.tokenizer = tokenizer
        self.updates = updates
        self.token_ids: list[int] = []
        self._prompt_seen = False
        self._last_text = ""

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        if value.ndim > 1 and value.shape[0] != 1:
            raise ValueError(f"AnswerStreamer streams one answer at a time; got a batch of {value.shape[0]}")
        self.token_ids.extend(int(token) for token in value.reshape(-1).tolist())
        from lit_medxchat.core.conversation import decode_answer

        text = decode_answer(self.tokenizer, self.token_ids)
        if text != self._last_text:
            self._last_text = text
            self.updates.put(text)

    def end(self) -> None:
        self.updates.put(GENERATION_DONE)
