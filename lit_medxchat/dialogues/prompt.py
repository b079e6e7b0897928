"""The paper's five-part prompt (§3.1) for building text-to-CXR dialogues with a chat LLM.

Parts: 1. task description, 2. human characteristics (who asks, which view they want),
3. dialogue properties, 4. the view-completed report, 5. two example dialogues. We ask for
JSON in our own dialogue format so that the reply can be validated mechanically.
"""

from __future__ import annotations

import json
import random

from lit_medxchat.core.constants import VIEW_SENTENCES, XRAY_END, XRAY_START

NUM_DIALOGUES = 3

PERSONAS: tuple[str, ...] = (
    "a patient who has just read their own chest X-ray report and wants to understand it",
    "a medical student preparing for a radiology exam",
    "a general practitioner explaining a report to a patient",
    "a worried relative of a patient",
    "a nurse who wants to see what the finding looks like",
)
VIEW_WORDS: dict[str, str] = {"PA": "posteroanterior (PA)", "AP": "anteroposterior (AP)", "LATERAL": "lateral"}

SYSTEM_MESSAGE = "You are a careful radiology assistant who writes training dialogues. You reply with JSON only."

_EXAMPLES = [
    {
        "task": "t2i",
        "turns": [
            {
                "role": "user",
                "content": 'Hi there, I recently had a chest X-ray and the report mentioned "right lower lobe '
                "consolidation\". I'm not sure what that means. Could you generate a lateral view of a chest "
                "X-ray with that condition for me?",
            },
            {
                "role": "assistant",
                "content": "Absolutely. Consolidation in the right lower lobe of your lungs typically indicates an "
                "infection, such as pneumonia. Here is an image based on the description you provided: "
                f"{XRAY_START} {VIEW_SENTENCES['LATERAL']} New right lower lobe consolidation is consistent with "
                f"pneumonia. {XRAY_END}",
            },
        ],
    },
    {
        "task": "t2i",
        "turns": [
            {"role": "user", "content": "My report says I have a small left pleural effusion. What is that?"},
            {
                "role": "assistant",
                "content": "A pleural effusion is fluid collecting between the lung and the chest wall; a small "
                "one often causes few symptoms. Would you like to see what it looks like?",
            },
            {"role": "user", "content": "Yes, please show me a PA view."},
            {
                "role": "assistant",
                "content": f"Here it is: {XRAY_START} {VIEW_SENTENCES['PA']} Small left pleural effusion with "
                f"blunting of the left costophrenic angle. {XRAY_END}",
            },
        ],
    },
]


def build_prompt(report_text: str, view: str, rng: random.Random) -> str:
    """The user message: the five parts, separated by headers; `view` is the view the human asks for."""
    persona = rng.choice(PERSONAS)
    task = (
        f"1. Task description. Please help construct {NUM_DIALOGUES} dialogues between a person and a helpful "
        f"assistant. Each chest X-ray image is represented by {XRAY_START} DESCRIPTION {XRAY_END}, where "
        "DESCRIPTION is a textual description or report of the X-ray image. In every dialogue the person asks "
        "for a chest X-ray image and the assistant explains briefly and then provides the image."
    )
    human = (
        f"2. Human characteristics. The person is {persona}. They prefer the {VIEW_WORDS[view]} view and ask "
        "for it in their own words."
    )
    properties = (
        "3. Dialogue properties. A good dialogue flows logically, answers what was asked, uses plain language, "
        "and is about the findings in the report below, never inventing other findings. The constructed "
        "dialogues must contain questions according to the following input chest x-ray image, which contains "
        f"only the relevant part instead of the whole text between {XRAY_START} and {XRAY_END}. Every assistant "
        f"turn that provides an image contains exactly one {XRAY_START} ... {XRAY_END} block, and that block "
        f'starts with "{VIEW_SENTENCES[view]}" followed by the relevant sentences of the report. Dialogues have '
        "one to three exchanges, start with the person and end with the assistant providing the image."
    )
    report = f"4. Report (view-completed). {XRAY_START} {report_text.strip()} {XRAY_END}"
    examples = "5. Example dialogues.\n" + "\n".join(json.dumps(example) for example in _EXAMPLES)
    output = (
        'Reply with one JSON object and nothing else: {"dialogues": [{"task": "t2i", "turns": [{"role": '
        '"user", "content": "..."}, {"role": "assistant", "content": "..."}]}, ...]} with exactly '
        f"{NUM_DIALOGUES} dialogues."
    )
    return "\n\n".join([task, human, properties, report, examples, output])
