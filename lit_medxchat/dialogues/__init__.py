"""Instruction dialogues for the three chat tasks (report, VQA, text-to-CXR), paper §3.1 and §3.3.

`DialogueBuilder(seed).build(key=..., sections=..., labels=..., view=..., report_text=...)` returns
the dialogues of one sample in the `<key>.conv.json` format of docs/data-contracts.md §2.
Rule-built by default; optionally the text-to-CXR dialogues come from an OpenAI-compatible API.
"""

from __future__ import annotations

from lit_medxchat.dialogues.builder import STAT_KEYS, DialogueBuilder

__all__ = ["STAT_KEYS", "DialogueBuilder"]
