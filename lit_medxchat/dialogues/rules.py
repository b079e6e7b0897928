"""Rule-built dialogues for the three tasks (paper §3.3), from a report's labels and sentences.

Every answer is read from the labels and the report's own sentences, never invented:
presence answers from the labels (uncertain labels are not asked about: "yes" or "no" would
both be wrong), location and size-severity-type answers from the sentences that mention the
finding, text-to-CXR prompts from the view sentence and those sentences.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from lit_medxchat.core.constants import (
    CHEXPERT_LABELS,
    PAPER_CATEGORIES,
    PAPER_CATEGORY_SOURCES,
    VIEW_SENTENCES,
    XRAY_END,
    XRAY_START,
)
from lit_medxchat.dialogues import templates as T
from lit_medxchat.dialogues.findings import FindingFacts, ReportFacts, is_size
from lit_medxchat.labeler.rules import PATHOLOGY_LABELS

T2I_VIEWS: tuple[str, ...] = ("PA", "AP", "LATERAL")
# Labels asked about with `diagnosis: null`: not one of the paper's six categories.
OTHER_LABELS: tuple[str, ...] = tuple(
    label
    for label in CHEXPERT_LABELS
    if label != "No Finding" and not any(label in s for s in PAPER_CATEGORY_SOURCES.values())
)
# At most this many sentences go between <Xray> and </Xray>: the CLIP text encoder reads 77 tokens.
MAX_XRAY_SENTENCES = 2


@dataclass(frozen=True)
class Subject:
    """One thing a VQA dialogue asks about: a paper category (diagnosis) or another CheXpert label."""

    diagnosis: str | None
    label: str  # the CheXpert label described in answers ("No Finding" for the normal question)
    present: bool


def _article(label: str, phrase: str) -> str:
    """ "a"/"an" + phrase for countable findings ("an 8 mm nodule"); mass nouns go bare ("mild edema")."""
    if not T.FINDING_NAMES[label][1]:
        return phrase
    number = phrase.split(" ")[0].split(".")[0]  # "eight", "eleven", "eighteen", "eighty" sound a vowel
    spoken_vowel = phrase[:1] in "aeiou" or (number.isdigit() and (number[0] == "8" or number in ("11", "18")))
    return ("an " if spoken_vowel else "a ") + phrase


def display_name(label: str, facts: FindingFacts | None = None) -> str:
    """The finding's name in answers; lesions are called what the report calls them (nodule, mass)."""
    if label == "Lung Lesion" and facts is not None and facts.kind in ("nodule", "mass"):
        return facts.kind
    if label == "Support Devices" and facts is not None and facts.kind:
        return facts.kind
    return T.FINDING_NAMES[label][0]


def noun_phrase(label: str, facts: FindingFacts | None) -> str:
    """ "a small right pleural effusion", "right lower lobe consolidation", "a 1.5 cm nodule"."""
    name = display_name(label, facts)
    if facts is None:
        return _article(label, name)
    words = [facts.size] if facts.size else []
    location = facts.location
    suffix = ""
    if location in ("right", "left", "bilateral", "retrocardiac"):
        words.append(location)
    elif location.endswith("lobe"):
        words.append(location)
    elif location == "lingula":
        suffix = " in the lingula"
    elif location:
        suffix = f" at the {location}" if location.split()[-1] in ("base", "apex") else f" in the {location} region"
    phrase = " ".join([*words, name]) + suffix
    return _article(label, phrase)


def where_phrase(location: str) -> str:
    """ "on the right side", "in the right lower lobe", "at the left base"."""
    if location in ("right", "left"):
        return f"on the {location} side"
    if location == "bilateral":
        return "on both sides (bilateral)"
    if location.endswith("lobe") or location == "lingula":
        return f"in the {location}"
    if location.split()[-1] in ("base", "apex"):
        return f"at the {location}"
    return f"in the {location} region"


def vqa_subjects(labels: dict[str, float | None], stats: Counter) -> tuple[list[Subject], list[Subject]]:
    """Present and absent subjects (paper categories first); uncertain ones are counted and left out."""
    present: list[Subject] = []
    absent: list[Subject] = []
    for category in PAPER_CATEGORIES:
        if category == "No Finding":
            if labels.get("No Finding") == 1.0:
                present.append(Subject(category, "No Finding", True))
            elif any(labels.get(name) == 1.0 for name in PATHOLOGY_LABELS):
                absent.append(Subject(category, "No Finding", False))
            else:
                stats["vqa_uncertain_skipped"] += 1
            continue
        sources = PAPER_CATEGORY_SOURCES[category]
        values = [labels.get(name) for name in sources]
        if 1.0 in values:
            present.append(Subject(category, next(s for s in sources if labels.get(s) == 1.0), True))
        elif -1.0 in values:
            stats["vqa_uncertain_skipped"] += 1
        else:
            absent.append(Subject(category, sources[0], False))
    others_present = [Subject(None, name, True) for name in OTHER_LABELS if labels.get(name) == 1.0]
    others_absent = [Subject(None, name, False) for name in OTHER_LABELS if labels.get(name) in (0.0, None)]
    stats["vqa_uncertain_skipped"] += sum(labels.get(name) == -1.0 for name in OTHER_LABELS)
    return present + others_present, absent + others_absent


def _pick(rng: random.Random, subjects: list[Subject], k: int) -> list[Subject]:
    """k subjects, paper categories before other labels, shuffled within each group."""
    paper = [s for s in subjects if s.diagnosis is not None]
    other = [s for s in subjects if s.diagnosis is None]
    rng.shuffle(paper)
    rng.shuffle(other)
    return (paper + other)[:k]


def _turn(question: str) -> dict:
    return {"role": "user", "content": question}


def _answer(content: str, topic: str, diagnosis: str | None, answer: str) -> dict:
    return {"role": "assistant", "content": content, "topic": topic, "diagnosis": diagnosis, "answer": answer}


def _presence_turns(rng: random.Random, subject: Subject, labels: dict, facts: ReportFacts) -> list[dict]:
    if subject.diagnosis == "No Finding":
        question = rng.choice(T.NORMAL_QUESTIONS)
        if subject.present:
            reply = rng.choice(T.NORMAL_YES_ANSWERS)
        else:
            shown = [noun_phrase(n, facts.facts(n)) for n in PATHOLOGY_LABELS if labels.get(n) == 1.0][:3]
            reply = rng.choice(T.NORMAL_NO_ANSWERS).format(findings=", ".join(shown))
        return [_turn(question), _answer(reply, "presence", subject.diagnosis, "yes" if subject.present else "no")]
    finding = facts.facts(subject.label) if subject.present else None
    name = display_name(subject.label, finding) if subject.present else T.FINDING_NAMES[subject.label][0]
    if subject.diagnosis == "Consolidation-or-Pneumonia":
        question = rng.choice(T.CONSOLIDATION_OR_PNEUMONIA_QUESTIONS)
        name = name if subject.present else "consolidation or pneumonia"
    else:
        plain = T.FINDING_NAMES[subject.label][0]
        question = rng.choice(T.PRESENCE_QUESTIONS).format(name=plain, a_name=_article(subject.label, plain))
    if subject.present:
        reply = rng.choice(T.YES_ANSWERS).format(np=noun_phrase(subject.label, finding))
    else:
        reply = rng.choice(T.NO_ANSWERS).format(name=name, a_name=_article(subject.label, name))
    answer = "yes" if subject.present else "no"
    return [_turn(question), _answer(_capitalise(reply), "presence", subject.diagnosis, answer)]


def _detail_turns(rng: random.Random, subject: Subject, facts: ReportFacts, stats: Counter) -> list[dict]:
    """Location and size-severity-type follow-ups, only where the report states them."""
    finding = facts.facts(subject.label)
    name = display_name(subject.label, finding)
    turns: list[dict] = []
    if finding.location:
        question = rng.choice(T.LOCATION_QUESTIONS).format(name=name)
        reply = rng.choice(T.LOCATION_ANSWERS).format(name=name, where=where_phrase(finding.location))
        turns += [_turn(question), _answer(_capitalise(reply), "location", subject.diagnosis, finding.location)]
        stats["vqa_location"] += 1
    if finding.size:
        if finding.size[:1].isdigit():
            question = rng.choice(T.SIZE_QUESTIONS)
            reply = rng.choice(T.MEASURE_ANSWERS).format(name=name, answer=finding.size)
        elif is_size(finding.size, subject.label):
            question = rng.choice(T.SIZE_QUESTIONS)
            answer_np = _article(subject.label, f"{finding.size} {name}")
            reply = rng.choice(T.SIZE_ANSWERS).format(name=name, answer=finding.size, answer_np=answer_np)
        else:
            question = rng.choice(T.SEVERITY_QUESTIONS)
            reply = rng.choice(T.SEVERITY_ANSWERS).format(name=name, answer=finding.size)
        reply = _capitalise(reply)
        turns += [_turn(question.format(name=name)), _answer(reply, "sst", subject.diagnosis, finding.size)]
        stats["vqa_sst"] += 1
    elif finding.kind:
        question = rng.choice(T.TYPE_QUESTIONS).format(name=T.FINDING_NAMES[subject.label][0])
        answer_np = _article(subject.label, f"{finding.kind} {name}" if finding.kind != name else name)
        reply = rng.choice(T.TYPE_ANSWERS).format(answer_np=answer_np)
        turns += [_turn(question), _answer(_capitalise(reply), "sst", subject.diagnosis, finding.kind)]
        stats["vqa_sst"] += 1
    return turns


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def vqa_dialogues(
    rng: random.Random, labels: dict[str, float | None], facts: ReportFacts, stats: Counter, max_pairs: int = 2
) -> list[dict]:
    """Balanced presence dialogues (as many "no" as "yes" where both exist), with location and
    size-severity-type follow-ups on the present findings."""
    present, absent = vqa_subjects(labels, stats)
    k = min(max_pairs, len(present), len(absent))
    chosen = _pick(rng, present, k) + _pick(rng, absent, k) if k else _pick(rng, present or absent, 1)
    dialogues = []
    for subject in chosen:
        turns = _presence_turns(rng, subject, labels, facts)
        if subject.present and subject.label != "No Finding":
            turns += _detail_turns(rng, subject, facts, stats)
        stats["vqa_yes" if subject.present else "vqa_no"] += 1
        dialogues.append({"task": "vqa", "turns": turns})
    return dialogues


def report_dialogue(rng: random.Random, report_text: str) -> dict:
    """One instruction -> the view-augmented report text, verbatim."""
    return {
        "task": "report",
        "turns": [_turn(rng.choice(T.REPORT_INSTRUCTIONS)), {"role": "assistant", "content": report_text.strip()}],
    }


def asked_view(rng: random.Random, view: str) -> str:
    """The view the user asks for: half the time the image's own view (when it is PA/AP/lateral)."""
    if view in T2I_VIEWS and rng.random() < 0.5:
        return view
    return rng.choice(T2I_VIEWS)


def xray_block(view: str, sentences: tuple[str, ...] | list[str]) -> str:
    """`<Xray> {view sentence} {findings} </Xray>`, the text-to-CXR prompt."""
    body = " ".join([VIEW_SENTENCES[view], *sentences[:MAX_XRAY_SENTENCES]])
    return f"{XRAY_START} {body} {XRAY_END}"


def _normal_sentences(facts: ReportFacts) -> list[str]:
    """Sentences with no positive or uncertain mention ("No acute cardiopulmonary process.")."""
    flagged = {m.sentence_index for m in facts.mentions if m.state != 0.0}
    return [s for i, s in enumerate(facts.sentences) if i not in flagged]


def t2i_dialogue(
    rng: random.Random, labels: dict[str, float | None], facts: ReportFacts, view: str, stats: Counter
) -> dict | None:
    """A request for a CXR of one of the report's findings (or of a normal chest) in a chosen view."""
    candidates = [
        label
        for label in [*(s for c in PAPER_CATEGORIES for s in PAPER_CATEGORY_SOURCES[c]), *OTHER_LABELS]
        if label != "No Finding" and labels.get(label) == 1.0 and facts.positive_sentences(label)
    ]
    target_view = asked_view(rng, view)
    view_phrase = rng.choice(T.VIEW_PHRASES[target_view])
    views = {"view": view_phrase, "a_view": ("an " if view_phrase[0] in "aeiouAEIOU" else "a ") + view_phrase}
    if candidates:
        paper = [c for c in candidates if c not in OTHER_LABELS]
        label = rng.choice(paper or candidates)
        finding = facts.facts(label)
        sentences = list(finding.sentences)
        np = noun_phrase(label, finding)
        quote = np if len(sentences[0].split()) > 12 else sentences[0].rstrip(".")
        request = rng.choice(T.T2I_REQUESTS).format(np=np, quote=quote, **views)
        explanation = T.EXPLANATIONS[label]
    elif labels.get("No Finding") == 1.0 and (sentences := _normal_sentences(facts)):
        request = rng.choice(T.T2I_NORMAL_REQUESTS).format(quote=sentences[0].rstrip("."), **views)
        explanation = T.NORMAL_EXPLANATION
    else:
        stats["t2i_skipped_no_sentence"] += 1
        return None
    reply = " ".join(
        [rng.choice(T.T2I_OPENINGS), explanation, rng.choice(T.T2I_CLOSINGS), xray_block(target_view, sentences)]
    )
    return {"task": "t2i", "turns": [_turn(request), {"role": "assistant", "content": reply}]}
