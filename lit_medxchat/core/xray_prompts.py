"""The text-to-CXR prompt inside an answer: what the LLM wrote between `<Xray>` and `</Xray>`.

One parser for everyone who reads it: the chat pipeline (which hands each prompt to CXR-SD) and the metrics
that check the prompt names what was asked (`callbacks.scoring.text_to_cxr`).
"""

from __future__ import annotations

import re

from lit_medxchat.core.constants import XRAY_END, XRAY_START

_XRAY_SPAN = re.compile(re.escape(XRAY_START) + r"(.*?)(?:" + re.escape(XRAY_END) + r"|$)", re.DOTALL)


def extract_xray_prompts(answer: str) -> tuple[list[str], list[str]]:
    """Prompts inside `<Xray> ... </Xray>` spans, and a warning per span left open (cut generation)."""
    prompts, warnings = [], []
    for match in _XRAY_SPAN.finditer(answer):
        prompt = match.group(1).strip()
        if not match.group(0).endswith(XRAY_END):
            warnings.append(f"unterminated {XRAY_START} span (answer cut at max_new_tokens?); drawing {prompt!r}")
        if prompt:
            prompts.append(prompt)
        else:
            warnings.append(f"empty {XRAY_START}{XRAY_END} span skipped")
    return prompts, warnings
