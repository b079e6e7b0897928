"""Rule-built dialogues: the conv.json contract, determinism, answers that agree with the report."""

from __future__ import annotations

import json
import re

import pytest
from dialogue_samples import make_sample

from lit_medxchat.core.constants import (
    CHAT_TASKS,
    IMAGE_TOKEN,
    PAPER_CATEGORIES,
    VIEW_SENTENCES,
    VQA_TOPICS,
    XRAY_END,
    XRAY_START,
)
from lit_medxchat.dialogues import DialogueBuilder
from lit_medxchat.dialogues.findings import read_report
from lit_medxchat.dialogues.reply import parse_reply
from lit_medxchat.dialogues.templates import VIEW_PHRASES

_BLOCK = re.compile(re.escape(XRAY_START) + " (.*?) " + re.escape(XRAY_END))


def _build(builder: DialogueBuilder, sample: dict) -> list[dict]:
    return builder.build(**sample)


def _vqa_turns(dialogues: list[dict]) -> list[dict]:
    return [t for d in dialogues if d["task"] == "vqa" for t in d["turns"] if t["role"] == "assistant"]


def _check_contract(dialogues: list[dict]) -> None:
    json.dumps({"dialogues": dialogues})  # the shard writer stores them as JSON
    for dialogue in dialogues:
        assert dialogue["task"] in CHAT_TASKS
        turns = dialogue["turns"]
        assert len(turns) >= 2 and len(turns) % 2 == 0
        for k, turn in enumerate(turns):
            assert turn["role"] == ("user" if k % 2 == 0 else "assistant")
            assert turn["content"].strip()
            assert IMAGE_TOKEN not in turn["content"]
            if dialogue["task"] == "vqa" and turn["role"] == "assistant":
                assert turn["topic"] in VQA_TOPICS
                assert turn["diagnosis"] is None or turn["diagnosis"] in PAPER_CATEGORIES
                assert turn["answer"]
            else:
                assert set(turn) == {"role", "content"}
        if dialogue["task"] == "t2i":
            assert XRAY_START not in turns[0]["content"]
            assert len(_BLOCK.findall(turns[-1]["content"])) == 1
            assert turns[-1]["content"].count(XRAY_START) == turns[-1]["content"].count(XRAY_END) == 1


def test_all_three_tasks_follow_the_contract(abnormal_sample, normal_sample):
    builder = DialogueBuilder(seed=0)
    for sample in (abnormal_sample, normal_sample):
        dialogues = _build(builder, sample)
        _check_contract(dialogues)
        assert {d["task"] for d in dialogues} == set(CHAT_TASKS)


def test_same_seed_and_key_give_the_same_dialogues(abnormal_sample):
    first = _build(DialogueBuilder(seed=3), abnormal_sample)
    assert _build(DialogueBuilder(seed=3), abnormal_sample) == first
    other_seeds = [_build(DialogueBuilder(seed=s), abnormal_sample) for s in range(4, 9)]
    assert any(d != first for d in other_seeds)
    other_keys = [_build(DialogueBuilder(seed=3), {**abnormal_sample, "key": f"k{s}"}) for s in range(5)]
    assert any(d != first for d in other_keys)


def test_report_dialogue_answers_with_the_view_augmented_report(abnormal_sample):
    dialogues = _build(DialogueBuilder(), abnormal_sample)
    (report,) = [d for d in dialogues if d["task"] == "report"]
    assert report["turns"][1]["content"] == abnormal_sample["report_text"]
    assert report["turns"][1]["content"].startswith(VIEW_SENTENCES["PA"])


def test_report_instructions_vary_across_samples(abnormal_sample):
    builder = DialogueBuilder()
    instructions = {_build(builder, {**abnormal_sample, "key": f"s{k}"})[0]["turns"][0]["content"] for k in range(30)}
    assert len(instructions) >= 5


def test_presence_answers_agree_with_labels_and_are_balanced(abnormal_sample):
    builder = DialogueBuilder()
    for k in range(20):
        dialogues = _build(builder, {**abnormal_sample, "key": f"b{k}"})
        presence = [t for t in _vqa_turns(dialogues) if t["topic"] == "presence"]
        answers = [t["answer"] for t in presence]
        assert answers.count("yes") == answers.count("no") >= 1
        for turn in presence:
            present = turn["diagnosis"] in ("Pleural Effusion", "Consolidation-or-Pneumonia")
            if turn["diagnosis"] is not None:
                assert turn["answer"] == ("yes" if present else "no"), turn
            assert turn["content"].lower().startswith(turn["answer"])
    assert builder.stats["vqa_yes"] == builder.stats["vqa_no"]


def test_location_and_size_come_from_the_report_sentences(abnormal_sample):
    seen = {}
    builder = DialogueBuilder()
    for k in range(20):
        for turn in _vqa_turns(_build(builder, {**abnormal_sample, "key": f"l{k}"})):
            if turn["topic"] != "presence":
                seen[(turn["diagnosis"], turn["topic"])] = turn["answer"]
                assert turn["answer"] in turn["content"]
    assert seen[("Pleural Effusion", "location")] == "right"
    assert seen[("Pleural Effusion", "sst")] == "small"
    assert seen[("Consolidation-or-Pneumonia", "location")] == "right lower lobe"


def test_severity_lesion_size_and_type_questions():
    sample = make_sample(
        "d-sst",
        "Moderate pulmonary edema. A 1.8 cm nodule in the left upper lobe.",
        "Moderate pulmonary edema. Left upper lobe nodule.",
        Edema=1.0,
        Lung_Lesion=1.0,
    )
    answers = {}
    questions = {}
    builder = DialogueBuilder()
    for k in range(25):
        dialogues = _build(builder, {**sample, "key": f"e{k}"})
        for d in dialogues:
            if d["task"] != "vqa":
                continue
            for q, a in zip(d["turns"][::2], d["turns"][1::2], strict=True):
                answers[(a["diagnosis"], a["topic"])] = a["answer"]
                questions.setdefault((a["diagnosis"], a["topic"]), set()).add(q["content"])
    assert answers[("Edema", "sst")] == "moderate"
    assert any("severe" in q or "severity" in q or "bad" in q for q in questions[("Edema", "sst")])
    assert answers[("Lung Lesion", "sst")] == "1.8 cm"
    assert answers[("Lung Lesion", "location")] == "left upper lobe"


def test_location_and_type_of_a_finding_named_after_its_sign():
    sample = make_sample(
        "d-cons", "Patchy right lower lobe opacity consistent with consolidation.", None, Consolidation=1.0
    )
    builder = DialogueBuilder()
    answers = set()
    for k in range(12):
        for turn in _vqa_turns(_build(builder, {**sample, "key": f"c{k}"})):
            if turn["diagnosis"] == "Consolidation-or-Pneumonia":
                answers.add((turn["topic"], turn["answer"]))
    assert answers == {("presence", "yes"), ("location", "right lower lobe"), ("sst", "patchy")}


@pytest.mark.parametrize(
    ("text", "label", "location"),
    [
        ("Small right effusion and left lower lobe consolidation.", "Pleural Effusion", "right"),
        ("Small right effusion and left lower lobe consolidation.", "Consolidation", "left lower lobe"),
        (
            "Left lower lobe and right middle lobe consolidation.",
            "Consolidation",
            "left lower lobe and right middle lobe",
        ),
        ("Consolidation in the right and left lower lobes.", "Consolidation", "bilateral"),
        ("Effusion at the left base.", "Pleural Effusion", "left base"),
        ("Small left apical pneumothorax.", "Pneumothorax", "left apex"),
        ("Retrocardiac opacity consistent with consolidation.", "Consolidation", "retrocardiac"),
    ],
)
def test_location_parsing(text, label, location):
    assert read_report({"findings": text}, "").facts(label).location == location


def test_facts_are_not_mixed_across_findings():
    facts = read_report(
        {
            "findings": "Small right pleural effusion. Trace left pleural effusion. Left PICC line ends in the SVC. "
            "Endotracheal tube in standard position.",
            "impression": None,
        },
        "",
    )
    effusion = facts.facts("Pleural Effusion")
    assert (effusion.location, effusion.size) == ("bilateral", "")
    device = facts.facts("Support Devices")
    assert (device.kind, device.location, device.sentences) == (
        "PICC line",
        "left",
        ("Left PICC line ends in the SVC.",),
    )


def test_uncertain_findings_are_not_asked_about():
    sample = make_sample("d-unc", None, "Possible left lower lobe pneumonia.", Pneumonia=-1.0)
    builder = DialogueBuilder()
    for k in range(10):
        for turn in _vqa_turns(_build(builder, {**sample, "key": f"u{k}"})):
            assert turn["diagnosis"] != "Consolidation-or-Pneumonia"
    assert builder.stats["vqa_uncertain_skipped"] >= 10


def test_normal_study_dialogues(normal_sample):
    builder = DialogueBuilder()
    for k in range(10):
        dialogues = _build(builder, {**normal_sample, "key": f"n{k}"})
        presence = {t["diagnosis"]: t["answer"] for t in _vqa_turns(dialogues)}
        assert presence.pop("No Finding") == "yes"
        assert set(presence.values()) == {"no"}
        (t2i,) = [d for d in dialogues if d["task"] == "t2i"]
        prompt = _BLOCK.search(t2i["turns"][1]["content"]).group(1)
        assert "clear" in prompt or "No pleural effusion" in prompt


@pytest.mark.parametrize("view", ["PA", "AP", "LATERAL", "OTHER"])
def test_t2i_prompt_uses_the_asked_view_and_the_findings(abnormal_sample, view):
    asked = set()
    builder = DialogueBuilder()
    for k in range(16):
        dialogues = _build(builder, {**abnormal_sample, "key": f"t{k}", "view": view})
        (t2i,) = [d for d in dialogues if d["task"] == "t2i"]
        request, reply = t2i["turns"][0]["content"], t2i["turns"][1]["content"]
        prompt = _BLOCK.search(reply).group(1)
        (prompt_view,) = [v for v, s in VIEW_SENTENCES.items() if prompt.startswith(s)]
        assert prompt_view != "OTHER"
        assert any(phrase in request for phrase in VIEW_PHRASES[prompt_view])
        assert parse_reply(json.dumps({"dialogues": [t2i]})) == [t2i]  # rules pass the LLM reply checks
        assert "consolidation" in prompt.lower() or "effusion" in prompt.lower()
        asked.add(prompt_view)
    assert asked == {"PA", "AP", "LATERAL"}


def test_empty_report_skips_report_and_t2i_but_keeps_vqa():
    sample = make_sample("d-empty", None, None, Pleural_Effusion=1.0)
    sample["report_text"] = ""
    builder = DialogueBuilder()
    dialogues = _build(builder, sample)
    assert {d["task"] for d in dialogues} == {"vqa"}
    assert builder.stats["report_empty"] == 1
    assert builder.stats["t2i_skipped_no_sentence"] == 1
    sample["report_text"] = None  # a missing report is an empty one
    assert {d["task"] for d in _build(builder, sample)} == {"vqa"}


def test_bad_inputs_name_the_sample_and_the_fix(abnormal_sample):
    builder = DialogueBuilder()
    with pytest.raises(ValueError, match="d-abnormal.*view_class"):
        builder.build(**{**abnormal_sample, "view": "LL"})
    with pytest.raises(ValueError, match="CHEXPERT_LABELS"):
        builder.build(**{**abnormal_sample, "labels": {"Effusion": 1.0}})
    with pytest.raises(ValueError, match="1.0/0.0/-1.0/None"):
        builder.build(**{**abnormal_sample, "labels": {"Pneumothorax": 2.0}})


def test_stats_count_every_dialogue(abnormal_sample, normal_sample):
    builder = DialogueBuilder()
    total = sum(len(_build(builder, s)) for s in (abnormal_sample, normal_sample))
    stats = builder.stats
    assert stats["samples"] == 2
    assert stats["dialogues_report"] + stats["dialogues_vqa"] + stats["dialogues_t2i"] == total
    assert stats["dialogues_t2i"] == 2
