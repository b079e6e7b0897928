"""The paper's VQA test protocol (ELIXR's, MedXChat Tables 3-4), on the held-out split's own dialogues.

Scoring one random dialogue per image, by its last answer, cannot tell reading from guessing: a dialogue about a
finding the image has ends with its location or size follow-up, so nearly every presence item asked is a "no"
and "no" scores 0.95. The protocol instead asks, per diagnostic category (the paper's six), a fixed number of
images with the finding and as many without it (presence; chance is then 0.5), and images with it where it is
and how large, severe or of what type it is (location, size/severity/type). Every question comes from the
split's rule-built dialogues, asked with the dialogue's earlier turns as history, exactly as a user would
have asked them, and is scored by the validation callback's matching rule.

Items are picked by a hash of (seed, image, category, topic), so the same split always gives the same items
whatever the model; `per_category=8` is the paper's 48-image design, a larger number a steadier figure.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from lit_medxchat.core.constants import PAPER_CATEGORIES, VQA_TOPICS


@dataclass(frozen=True)
class ProtocolItem:
    """One question of the protocol: the `turn`-th turn (an answer) of the sample's `dialogue`-th dialogue."""

    key: str
    dialogue: int
    turn: int
    topic: str
    diagnosis: str
    answer: str


def candidate_items(key: str, dialogues: list[dict]) -> list[ProtocolItem]:
    """Every answer of the sample's VQA dialogues about one of the paper's categories, on a protocol topic."""
    found = []
    for d, dialogue in enumerate(dialogues):
        if dialogue.get("task") != "vqa":
            continue
        for t, turn in enumerate(dialogue.get("turns") or []):
            topic, diagnosis = turn.get("topic"), turn.get("diagnosis")
            if turn.get("role") == "assistant" and topic in VQA_TOPICS and diagnosis in PAPER_CATEGORIES:
                found.append(ProtocolItem(key, d, t, topic, diagnosis, str(turn.get("answer"))))
    return found


def _order(item: ProtocolItem, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{item.key}:{item.diagnosis}:{item.topic}:{item.answer}".encode()).hexdigest()


def select_protocol(candidates: Iterable[ProtocolItem], per_category: int, seed: int = 0) -> list[ProtocolItem]:
    """Per category: `per_category` presence questions on images with the finding and as many on images without
    it (fewer of both when the split has fewer of either: presence stays balanced), and up to `per_category`
    location and size/severity/type questions. One question per (image, category, topic)."""
    pools: dict[tuple[str, str], dict[tuple[str, str], ProtocolItem]] = defaultdict(dict)
    for item in candidates:
        group = item.answer if item.topic == "presence" else ""
        pools[(item.diagnosis, item.topic + ":" + group)].setdefault((item.key, item.diagnosis), item)
    chosen: list[ProtocolItem] = []
    for category in PAPER_CATEGORIES:
        def ranked(topic: str, category: str = category) -> list[ProtocolItem]:
            return sorted(pools.get((category, topic), {}).values(), key=lambda item: _order(item, seed))

        yes, no = ranked("presence:yes"), ranked("presence:no")
        balanced = min(per_category, len(yes), len(no))
        chosen += yes[:balanced] + no[:balanced]
        for topic in VQA_TOPICS:
            if topic != "presence":
                chosen += ranked(topic + ":")[:per_category]
    return chosen


def protocol_for_split(data_dir: str | Path, split: str, per_category: int, seed: int = 0) -> list[ProtocolItem]:
    """The protocol's items on a split of the shards (reads every sample's dialogues once)."""
    from datamodules.streaming import iter_samples

    candidates: list[ProtocolItem] = []
    for sample in iter_samples(data_dir, split):
        candidates += candidate_items(sample.key, (sample.json("conv.json") or {}).get("dialogues") or [])
    return select_protocol(candidates, per_category, seed)


def protocol_counts(items: list[ProtocolItem]) -> dict[str, int]:
    """Items per topic and presence answer ("presence:yes", "location", ...): the n beside each figure."""
    return dict(Counter(item.topic + (f":{item.answer}" if item.topic == "presence" else "") for item in items))


def _asked(sample: Any, item: ProtocolItem) -> Any:
    """The sample with one dialogue: the item's dialogue up to and including the answer it asks for."""
    dialogues = sample.json("conv.json")["dialogues"]
    turns = dialogues[item.dialogue]["turns"][: item.turn + 1]
    members = {**sample.members, "conv.json": json.dumps({"dialogues": [{"task": "vqa", "turns": turns}]}).encode()}
    return replace(sample, members=members)


def protocol_examples(data: Any, split: str, items: list[ProtocolItem]) -> tuple[list[dict[str, Any]], Counter]:
    """The model inputs of every item (image, history, question; the evaluated answer as reference), read with
    the run's own DataModule options; and the count of items skipped, by reason (an image that does not decode).
    """
    import numpy as np

    from datamodules.shard_reader import ShardReader, SkipSample
    from datamodules.streaming import EVENTS_KEY, iter_samples

    by_key: dict[str, list[ProtocolItem]] = defaultdict(list)
    for item in items:
        by_key[item.key].append(item)
    data.setup("test" if split == "test" else "validate")
    make_example = data.example_fn(split, train=False)
    locations = data.key_locations(split)
    reader = ShardReader(data.manifests[split]) if locations else None
    examples: list[dict[str, Any]] = []
    skipped: Counter = Counter()
    try:
        for sample in iter_samples(data.data_dir, split):
            if sample.key not in by_key:
                continue
            if reader is not None:
                sample.lookup = lambda key: reader.read(*locations[key]) if key in locations else None
            for item in by_key[sample.key]:
                try:
                    example = make_example(_asked(sample, item), np.random.default_rng(0))
                except SkipSample as error:
                    skipped[error.reason] += 1
                    continue
                example.pop(EVENTS_KEY, None)
                example["meta"] = {**example["meta"], "protocol": asdict(item)}
                examples.append(example)
    finally:
        if reader is not None:
            reader.close()
    return examples, skipped


def answer_protocol(model: Any, data: Any, split: str, items: list[ProtocolItem],
                    progress: bool = False) -> tuple[list[dict[str, Any]], Counter]:
    """Each item's generated answer, as the VQA callback's items (`prediction`, `reference`, `meta`), and the
    items skipped by reason. `model` is a `MedXChatLoRA` in eval mode; `data` the run's `ChatDataModule`."""
    from tqdm.auto import tqdm

    from lit_medxchat.evaluation.held_out import EVAL_BATCH_SIZE

    examples, skipped = protocol_examples(data, split, items)
    collate = data.collate_fn(split, train=False)
    answered: list[dict[str, Any]] = []
    starts = range(0, len(examples), EVAL_BATCH_SIZE)
    for start in tqdm(starts, desc="VQA protocol", unit="batch", disable=not progress, leave=False):
        batch = collate(examples[start : start + EVAL_BATCH_SIZE])
        predictions = model.generate(batch["prompt_input_ids"], batch["prompt_attention_mask"],
                                     batch["pixel_values"], batch["image_mask"])
        answered += [{"prediction": p, "reference": r, "meta": m}
                     for p, r, m in zip(predictions, batch["references"], batch["meta"], strict=True)]
    return answered, skipped


def opens_with_yes_or_no(answer: str) -> bool:
    """Whether an answer's first word is a yes or a no as the scorer reads it ("Yes, ...", "No.")."""
    from callbacks.scoring.vqa import normalise_answer

    words = normalise_answer(answer).split()
    return bool(words) and words[0] in ("yes", "no")


def protocol_scores(answered: list[dict[str, Any]]) -> dict[str, float]:
    """The VQA callback's accuracies (overall, per topic, per diagnosis, with counts) on the protocol's items,
    plus `presence_yes_no_rate`: the share of presence answers that open with a readable yes or no."""
    from callbacks.scoring.vqa import vqa_accuracy

    scores = vqa_accuracy([a["prediction"] for a in answered], [a["reference"] for a in answered],
                          [a["meta"] for a in answered])
    presence = [a for a in answered if a["meta"].get("topic") == "presence"]
    if presence:  # presence accuracy per category: the paper's per-diagnosis figure mixes in the follow-ups
        by_category = vqa_accuracy([a["prediction"] for a in presence], [a["reference"] for a in presence],
                                   [a["meta"] for a in presence])
        scores.update({f"presence_{key}": value for key, value in by_category.items() if "/diagnosis/" in key})
    scores["presence_yes_no_rate"] = (sum(opens_with_yes_or_no(a["prediction"]) for a in presence) / len(presence)
                                      if presence else float("nan"))
    return scores
