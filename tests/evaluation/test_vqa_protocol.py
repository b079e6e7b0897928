"""The VQA protocol picks the paper's design from a split's dialogues: balanced presence per category, capped
follow-ups, one question per (image, category, topic), the same items every time; it asks each question with
its dialogue's history, and reads a yes or no the way the scorer does."""

from __future__ import annotations

from collections import Counter

from lit_medxchat.evaluation.vqa_protocol import (
    ProtocolItem,
    candidate_items,
    opens_with_yes_or_no,
    protocol_counts,
    select_protocol,
)


def _dialogue(diagnosis: str, present: bool, location: str | None = None) -> dict:
    turns = [{"role": "user", "content": f"Is there {diagnosis}?"},
             {"role": "assistant", "content": "Yes." if present else "No.", "topic": "presence",
              "diagnosis": diagnosis, "answer": "yes" if present else "no"}]
    if location:
        turns += [{"role": "user", "content": "Where?"},
                  {"role": "assistant", "content": f"In the {location}.", "topic": "location",
                   "diagnosis": diagnosis, "answer": location}]
    return {"task": "vqa", "turns": turns}


def test_candidates_are_every_answer_about_a_paper_category() -> None:
    dialogues = [{"task": "report", "turns": []}, _dialogue("Edema", True, "bilateral"),
                 _dialogue("Pleural Effusion", False),
                 {"task": "vqa", "turns": [{"role": "user", "content": "?"},
                                           {"role": "assistant", "content": "Yes.", "topic": "presence",
                                            "diagnosis": None, "answer": "yes"}]}]
    found = candidate_items("k", dialogues)
    assert [(i.dialogue, i.turn, i.topic, i.diagnosis, i.answer) for i in found] == [
        (1, 1, "presence", "Edema", "yes"), (1, 3, "location", "Edema", "bilateral"),
        (2, 1, "presence", "Pleural Effusion", "no")]


def test_presence_is_balanced_per_category_and_follow_ups_are_capped() -> None:
    candidates = []
    for index in range(30):  # 10 images with edema (each with a location), 20 without
        present = index < 10
        candidates += candidate_items(f"img{index}", [_dialogue("Edema", present, "bilateral" if present else None)])
    candidates += candidate_items("pe0", [_dialogue("Pleural Effusion", True)])  # no image without effusion
    chosen = select_protocol(candidates, per_category=8)
    counts = Counter((i.diagnosis, i.topic, i.answer if i.topic == "presence" else "") for i in chosen)
    assert counts == {("Edema", "presence", "yes"): 8, ("Edema", "presence", "no"): 8, ("Edema", "location", ""): 8}
    assert protocol_counts(chosen) == {"presence:yes": 8, "presence:no": 8, "location": 8}
    few = select_protocol(candidates, per_category=50)  # fewer positives than asked: as many negatives as positives
    assert Counter(i.answer for i in few if i.topic == "presence") == {"yes": 10, "no": 10}
    assert select_protocol(list(reversed(candidates)), per_category=8) == chosen  # order-free, reproducible
    assert select_protocol(candidates, per_category=8, seed=1) != chosen


def test_one_question_per_image_category_and_topic() -> None:
    twice = candidate_items("k", [_dialogue("Edema", True), _dialogue("Edema", True)])
    twice += candidate_items("n", [_dialogue("Edema", False)])
    assert len(twice) == 3
    assert select_protocol(twice, per_category=8) == [
        ProtocolItem("k", 0, 1, "presence", "Edema", "yes"), ProtocolItem("n", 0, 1, "presence", "Edema", "no")]


def test_a_readable_yes_or_no_opens_the_answer() -> None:
    assert opens_with_yes_or_no("Yes, there is a small effusion.")
    assert opens_with_yes_or_no("No. The lungs are clear.")
    assert not opens_with_yes_or_no("There is no effusion.")
    assert not opens_with_yes_or_no("The heart is normal in size.")
    assert not opens_with_yes_or_no("")
