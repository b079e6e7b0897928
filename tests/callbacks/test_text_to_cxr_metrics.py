"""The `<Xray>` request rule on answers whose verdicts are known, and its validation callback."""

from __future__ import annotations

import math

from callbacks.scoring.text_to_cxr import named_view, xray_request_rate, xray_tags_in
from callbacks.text_to_cxr_metrics import TextToCXRMetrics
from lit_medxchat.core.constants import XRAY_END, XRAY_START

LATERAL_EFFUSION = f"Here it is. {XRAY_START} Lateral view of the chest was obtained. There is a small left pleural " \
                   f"effusion. {XRAY_END}"


def _answer(prompt: str, closed: bool = True) -> str:
    return f"Sure. {XRAY_START} {prompt} {XRAY_END if closed else ''}"


def test_request_rule_needs_the_requested_view_and_every_requested_finding() -> None:
    """Proves: an answer passes only with the reference prompt's view and findings, in a closed span; a reference
    without a prompt is not counted; view and finding rates are counted separately."""
    items = [
        {"reference": LATERAL_EFFUSION,
         "prediction": _answer("Lateral view of the chest was obtained. Small left pleural effusion.")},  # passes
        {"reference": LATERAL_EFFUSION,
         "prediction": _answer("PA view of the chest was obtained. Small left pleural effusion.")},  # wrong view
        {"reference": LATERAL_EFFUSION,
         "prediction": _answer("Lateral view of the chest was obtained. The lungs are clear.")},  # finding missing
        {"reference": LATERAL_EFFUSION,
         "prediction": _answer("Lateral view of the chest was obtained. Pleural effusion.", closed=False)},  # cut
        {"reference": "no prompt in this reference", "prediction": _answer("PA view of the chest was obtained.")},
    ]
    rates = xray_request_rate(items, _effusion_labeler)
    assert rates == {"request_rate": 0.25, "view_rate": 0.5, "finding_rate": 0.5, "n": 4.0}
    assert math.isnan(xray_request_rate([], _effusion_labeler)["request_rate"])


def test_named_view_and_stray_tags() -> None:
    assert named_view("blah. Lateral view of the chest was obtained. x") == "LATERAL"
    assert named_view("AP view of the chest was obtained") == "AP" and named_view("a chest") is None
    assert xray_tags_in(["no tags", f"a {XRAY_START} b", f"{XRAY_END}", "yes"]) == 2


def test_callback_scores_only_text_to_cxr_items() -> None:
    """Proves: the validation callback keeps the t2i items of a mixed batch and logs the rule's rates."""
    callback = TextToCXRMetrics(labeler=_effusion_labeler)
    outputs = {"predictions": [_answer("Lateral view of the chest was obtained. Pleural effusion."), "yes"],
               "references": [LATERAL_EFFUSION, "no"], "tasks": ["t2i", "vqa"]}
    items = callback.collect(outputs, None, None)
    assert len(items) == 1
    assert callback.score(items) == {"xray_request_rate": 1.0, "xray_view_rate": 1.0, "xray_finding_rate": 1.0,
                                     "xray_n": 1.0}
    assert callback.score([]) == {"xray_n": 0.0}


def _effusion_labeler(text: str) -> dict[str, float | None]:
    """A labeler that knows one finding: enough to pin the rule without the project's labeler's phrase lists."""
    return {"Pleural Effusion": 1.0 if "effusion" in text.lower() else None}
