"""VQA accuracy by topic (presence, location, size-severity-type) and by diagnosis (paper Tables 3-4).

Answer-matching rule (a generated answer is a free sentence; the reference carries a short canonical
``answer`` such as ``yes``, ``right lower lobe`` or ``moderate``):

1. Normalise both: lower-case, quotes dropped, punctuation and hyphens to spaces (decimal points of
   measurements such as ``1.5 cm`` kept), articles
   (a/an/the) dropped, then synonyms mapped to one canonical word: ``both``/``bilaterally``/
   ``both sides``/``both lungs`` -> ``bilateral``; ``lt``/``rt`` -> ``left``/``right``; ``mild``/
   ``minimal``/``tiny``/``slight`` -> ``small``; ``severe``/``massive``/``extensive`` -> ``large``;
   ``rul``/``rml``/``rll``/``lul``/``lll`` -> the lobe's words.
2. Yes/no answers: the prediction's polarity is its first word when that is ``yes``/``no``; otherwise
   ``no`` when it holds a negation (no, not, without, absent, negative, free of, none, resolved),
   otherwise ``yes`` when it holds an affirmation (there is/are, present, seen, noted, shows, evidence of,
   demonstrates, visible); a sentence with neither is wrong.
3. Other answers: the *sets* of sides (left/right; bilateral = both) and of grades (small/moderate/large)
   named in the prediction must equal those of the answer (so "moderate to large" does not match
   "moderate", "left and right" matches "bilateral"), and every other answer word must occur in the
   prediction.
4. Without a canonical answer, the normalised prediction must equal the normalised reference sentence.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence

from lit_medxchat.core.constants import VQA_TOPICS

_PHRASES = (
    (r"\bboth (?:sides|lungs|lung bases|bases|hemithoraces)\b", "bilateral"),
    (r"\bfree of\b", "without"),
)
_WORDS = {
    "both": "bilateral",
    "bilaterally": "bilateral",
    "lt": "left",
    "rt": "right",
    "mild": "small",
    "minimal": "small",
    "tiny": "small",
    "slight": "small",
    "severe": "large",
    "massive": "large",
    "extensive": "large",
    "rul": "right upper lobe",
    "rml": "right middle lobe",
    "rll": "right lower lobe",
    "lul": "left upper lobe",
    "lll": "left lower lobe",
}
_ARTICLES = {"a", "an", "the"}
_SIDES = {"left", "right"}
_GRADES = {"small", "moderate", "large"}
_NEGATIONS = {"no", "not", "without", "absent", "negative", "none", "resolved", "n't"}
_AFFIRMATIONS = re.compile(r"\b(?:yes|there (?:is|are)|present|seen|noted|shows?|evidence of|demonstrates?|visible)\b")


def normalise_answer(text: str) -> str:
    """Lower-case, fold punctuation/hyphens to spaces, drop articles, map synonyms (rule 1)."""
    text = text.lower().replace("\u2019", "'").replace("n't", " n't")
    text = re.sub(r"'(?!t\b)", " ", text)  # quotes go; the negation clitic n't stays
    text = re.sub(r"[^a-z0-9'. ]+", " ", text)
    text = re.sub(r"\.(?!(?<=[0-9]\.)[0-9])", " ", text)  # periods go, decimal points (1.5 cm) stay
    for pattern, repl in _PHRASES:
        text = re.sub(pattern, repl, text)
    words = [_WORDS.get(w, w) for w in text.split() if w not in _ARTICLES]
    return " ".join(words)


def answer_polarity(text: str) -> str | None:
    """``yes``/``no`` read from a sentence (rule 2), None when it says neither."""
    norm = normalise_answer(text)
    words = norm.split()
    if not words:
        return None
    if words[0] in ("yes", "no"):
        return words[0]
    if _NEGATIONS.intersection(words):
        return "no"
    return "yes" if _AFFIRMATIONS.search(norm) else None


def _sides(words: set[str]) -> set[str]:
    return set(_SIDES) if "bilateral" in words else words & _SIDES


def answer_matches(prediction: str, answer: str | None, reference: str | None = None) -> bool:
    """Whether a generated answer counts as correct under the module's rule."""
    if not answer:
        return normalise_answer(prediction) == normalise_answer(reference or "")
    target = normalise_answer(answer)
    if target in ("yes", "no"):
        return answer_polarity(prediction) == target
    pred_words, target_words = set(normalise_answer(prediction).split()), set(target.split())
    if _sides(target_words) != _sides(pred_words) and _sides(target_words):
        return False
    if (target_words & _GRADES) and (target_words & _GRADES) != (pred_words & _GRADES):
        return False
    rest = target_words - _SIDES - _GRADES - {"bilateral"}
    return rest <= pred_words


def _slug(name: str) -> str:
    return name.lower().replace(" ", "_").replace("-", "_")


def vqa_accuracy(predictions: Sequence[str], references: Sequence[str], metas: Sequence[Mapping]) -> dict[str, float]:
    """Accuracy overall, by topic and by diagnosis, plus the item counts behind each (``*_n``).

    Keys: ``vqa_acc``, ``vqa_acc/<topic>``, ``vqa_acc/diagnosis/<category>``, with ``vqa_n...`` counts.
    Items whose topic is not one of `VQA_TOPICS` count in the overall accuracy and under
    ``vqa_n/unknown_topic``; items without a diagnosis are left out of the by-diagnosis table only.
    """
    if not len(predictions) == len(references) == len(metas):
        raise ValueError(f"{len(predictions)} predictions, {len(references)} references, {len(metas)} metas")
    hits: dict[str, list[bool]] = defaultdict(list)
    for pred, ref, meta in zip(predictions, references, metas, strict=True):
        ok = answer_matches(pred, meta.get("answer"), ref)
        hits[""].append(ok)
        topic = meta.get("topic")
        hits[f"/{topic}" if topic in VQA_TOPICS else "/unknown_topic"].append(ok)
        if meta.get("diagnosis"):
            hits[f"/diagnosis/{_slug(meta['diagnosis'])}"].append(ok)
    out: dict[str, float] = {}
    for key, values in sorted(hits.items()):
        if key != "/unknown_topic":
            out[f"vqa_acc{key}"] = sum(values) / len(values)
        out[f"vqa_n{key}"] = float(len(values))
    return out
