"""A corpus of report pairs written for the metric tests, generated combinatorially from templates.

The sentences carry what PTB tokenisation must get right in radiology text: measurements (``2.5cm``,
``5mm``, ``1.5-2.0 cm``), abbreviations (``e.g.``, ``p.m.``, ``Dr.``, ``vs.``), brackets, de-identified
blanks (``___``), ``s/p``, hyphenated words, clitics, numbered lists, section headers and quotes.
"""

from __future__ import annotations

import random

_SIDES = ["right", "left", "bilateral", "Right", "Left-sided"]
_SIZES = ["small", "moderate", "large", "Trace", "mild"]
_FINDINGS = ["pleural effusion", "pneumothorax", "consolidation", "atelectasis", "pulmonary edema", "nodule"]
_MEASURES = ["2.5cm", "5mm", "1.5-2.0 cm", "3 x 4 mm", "1.2x3.4 cm", "10 cm", "4.5 cm", "7-mm"]

_TEMPLATES = [
    "There is a {size} {side} {finding}.",
    "No {finding} or pneumothorax.",
    "{side} {finding} measuring {measure}, unchanged since ___.",
    "The ET tube terminates {measure} above the carina (appropriate position).",
    "FINDINGS: {size} {finding}; the heart size is normal.",
    "IMPRESSION: 1. {size} {finding}. 2. No acute cardiopulmonary process.",
    "Compared to the study from 10/12/2015 at 3:45 p.m., the {finding} is {size}.",
    "The patient's {finding} can't be excluded, e.g. at the {side} base.",
    "s/p CABG with median sternotomy wires; {side} PICC line tip in the SVC.",
    "Findings were discussed with Dr. ___ at 10:30 a.m. by telephone.",
    'Heart size is top-normal; "{size}" vascular congestion vs. early {finding}.',
    "{side} lower lobe opacity [likely {finding}] - cannot exclude pneumonia!",
    "Interval decrease in {finding} (now {size}), i.e. improving.",
    "Stable {measure} {side} {finding}; otherwise lungs are clear...",
    "AP portable view of the chest was obtained -- {size} {finding}?",
    "There is {size} {finding} at the {side} apex {{stable}}, 50% smaller than before.",
    "Lines/tubes: NG tube in the stomach; the lungs are well-expanded and clear.",
    "PA and lateral views of the chest: no {finding}, no free air.",
]


def _sentence(rng: random.Random) -> str:
    template = rng.choice(_TEMPLATES)
    return template.format(
        size=rng.choice(_SIZES), side=rng.choice(_SIDES), finding=rng.choice(_FINDINGS), measure=rng.choice(_MEASURES)
    )


def report(rng: random.Random, sentences: tuple[int, int] = (1, 5)) -> str:
    """One report of a few template sentences."""
    return " ".join(_sentence(rng) for _ in range(rng.randint(*sentences)))


def report_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` (generated, reference) pairs; a third of the hypotheses share sentences with their reference."""
    rng = random.Random(seed)
    predictions, references = [], []
    for _ in range(n):
        ref = report(rng)
        if rng.random() < 0.33:
            parts = ref.split(". ")
            hyp = ". ".join(parts[: max(1, len(parts) - 1)]) + " " + report(rng, (0, 2))
        else:
            hyp = report(rng)
        predictions.append(hyp.strip())
        references.append(ref)
    return predictions, references
