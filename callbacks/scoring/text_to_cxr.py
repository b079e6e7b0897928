"""Does a text-to-CXR answer ask CXR-SD for what the user requested? The `<Xray>` request rule, on text only.

A request is the reference answer's own `<Xray>` prompt: its view sentence and the findings the labeler reads as
present in it. A generated answer passes when its first `<Xray> ... </Xray>` span states the same view and every
such finding is present in it too (a "no finding" request must be read as No Finding). Answers without a closed
span fail. Used by the validation callback (`callbacks.text_to_cxr_metrics`), the demo and `lit-medxchat evaluate`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lit_medxchat.core.constants import VIEW_SENTENCES, XRAY_END, XRAY_START
from lit_medxchat.core.xray_prompts import extract_xray_prompts

Labeler = Callable[[str], dict[str, Any]]


def named_view(text: str) -> str | None:
    """The view class whose view sentence (`VIEW_SENTENCES`) the text states, or None."""
    lowered = text.lower()
    for view, sentence in VIEW_SENTENCES.items():
        if view != "OTHER" and sentence.lower().rstrip(".") in lowered:
            return view
    return None


def xray_request_rate(items: Sequence[dict], labeler: Labeler) -> dict[str, float]:
    """`request_rate` (view and findings as requested), `view_rate`, `finding_rate` and `n` over `items`
    (`{"prediction", "reference"}` answers); items whose reference holds no prompt are not counted."""
    passed, views, findings = [], [], []
    for item in items:
        wanted, _ = extract_xray_prompts(item["reference"])
        got, warnings = extract_xray_prompts(item["prediction"])
        if not wanted:
            continue
        prompt = got[0] if got and not warnings else ""
        view_ok = named_view(prompt) is not None and named_view(prompt) == named_view(wanted[0])
        wanted_labels, got_labels = labeler(wanted[0]), labeler(prompt) if prompt else {}
        positives = [name for name, value in wanted_labels.items() if value == 1.0]
        finding_ok = bool(prompt) and all(got_labels.get(name) == 1.0 for name in positives)
        views.append(view_ok)
        findings.append(finding_ok)
        passed.append(view_ok and finding_ok)

    def rate(flags: list[bool]) -> float:
        return float(np.mean(flags)) if flags else float("nan")

    return {"request_rate": rate(passed), "view_rate": rate(views), "finding_rate": rate(findings),
            "n": float(len(passed))}


def xray_tags_in(predictions: Sequence[str]) -> int:
    """How many answers contain an `<Xray>` or `</Xray>` tag (report and VQA answers must contain none)."""
    return sum(1 for text in predictions if XRAY_START in text or XRAY_END in text)
