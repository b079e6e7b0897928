"""The scripted conversations the dialogue run learns, and small helpers shared by the web-chat tests."""

from __future__ import annotations

import socket

from lit_medxchat.core.constants import XRAY_END, XRAY_START
from lit_medxchat.serve.tasks import draw_request, question_request, report_request

REPORT = "findings: small left pleural effusion."
WHERE = "Where is it?"
WHERE_EFFUSION = "At the left base."
PNEUMOTHORAX_ANSWER = "Yes, a right pneumothorax."
WHERE_PNEUMOTHORAX = "At the right apex."
DRAW = draw_request("LATERAL", "Pleural Effusion")
DRAW_PROMPT = "Lateral view. Left pleural effusion."
DRAW_ANSWER = f"Sure. {XRAY_START} {DRAW_PROMPT} {XRAY_END}"
MAX_NEW_TOKENS = 64

# (number of images, turns): what the dialogue run learns by heart.
DIALOGUES = [
    (1, [report_request(), REPORT, WHERE, WHERE_EFFUSION]),
    (1, [question_request("Pneumothorax"), PNEUMOTHORAX_ANSWER, WHERE, WHERE_PNEUMOTHORAX]),
    (1, [report_request(), REPORT, DRAW, DRAW_ANSWER]),
    (0, [DRAW, DRAW_ANSWER]),
]


def free_port() -> int:
    """A loopback port nothing listens on now (the server binds it right after)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def chat_settings(max_new_tokens: int = MAX_NEW_TOKENS) -> tuple:
    """The /chat endpoint's settings after the message: beams, max new tokens, diffusion steps, seed."""
    return (1, max_new_tokens, 2, 0)
