"""Report text -> the 14 CheXpert labels (1.0 mention, 0.0 negated, -1.0 uncertain, None absent).

Pipeline per report: lower-case and split into sentences; split sentences into clauses at
";", ":" and clause openers (", there", " and the"); find mentions (lexicon phrases, and anatomy
with a qualifier such as "heart size is normal"); give each mention the state of the nearest
trigger before it (negation, uncertainty, pseudo-negation or a presence statement that ends a
negation's scope) and after it; aggregate per label over the report (positive beats uncertain
beats negated, as CheXpert does); then apply the "No Finding" rule. The rules are documented in
docs/labeler.md; the vocabulary lives in `lexicon.py`.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

from lit_medxchat.core.constants import CHEXPERT_LABELS
from lit_medxchat.labeler import lexicon
from lit_medxchat.labeler.matcher import phrase_regex

POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0
# CheXpert aggregation over a report: a positive mention anywhere wins, then uncertain, then negated.
_PRIORITY = {POSITIVE: 2, UNCERTAIN: 1, NEGATIVE: 0}
# Labels whose positive/uncertain mention rules out "No Finding" (Support Devices does not).
PATHOLOGY_LABELS: tuple[str, ...] = tuple(x for x in CHEXPERT_LABELS if x not in ("No Finding", "Support Devices"))
# Scope of a trigger: at most this many words between it and the mention, not counting the words
# of other mentions, so "no consolidation, effusion, pneumothorax or pulmonary edema" negates all.
SCOPE_WORDS = 6
QUALIFIER_WORDS = 6

# A period after these words does not end a sentence ("atelectasis vs. pneumonia").
_ABBREVIATIONS = frozenset({"vs", "e.g", "i.e", "dr", "approx", "st", "mr", "mrs", "ms", "cf"})
# Sentence ends: ".", "!" or "?" before whitespace, a blank line, and (zero-width) the start of a
# numbered item ("1. ...", "2) ...") or a bulleted line, as impressions are often written.
_SENTENCE_END = re.compile(
    r"[.!?](?=[\s\"')\]]|$)|\.(?=[A-Z][a-z])|\n[^\S\n]*\n|(?<=\s)(?=\(?\d{1,2}[.)]\s+[A-Za-z])|(?=\n[^\S\n]*[-*\u2022]\s)"
)
_LIST_MARKER = re.compile(r"^(?:\(?\d{1,2}[.)]|[-*\u2022])(?:\s+|$)")
_CLAUSE_BREAK = re.compile(
    r"[;:]|,\s*(?:and\s+)?(?=(?:there|the|this|these|it)\b)|\s(?:and|with)\s+(?=(?:there|the)\b)"
)
_WORD = re.compile(r"[\w/'-]+")
# Words that count toward a trigger's scope: not de-identification marks ("XXXX" in IU X-ray,
# "___" in MIMIC-CXR), which stand for words we cannot read ("No XXXX of pneumothorax").
_COUNTED_WORD = re.compile(r"(?<![\w/'-])(?!(?:x{3,}|_{2,})(?![\w/'-]))[\w/'-]+")
# The gap between two items of a coordinated list: a comma and/or a conjunction and at most three
# modifier words ("no focal consolidation, large effusion, or acute displaced rib fracture").
_COORDINATION = re.compile(r"^\s*,?\s*(?:(?:and|or|nor|and/or)\s+)?(?:[\w-]+\s+){0,3}$")
_DISJUNCTION = re.compile(r"^\s*,?\s*or\s+(?:\w+\s+){0,2}$")

# Trigger kinds.
_NEG, _UNC, _STRONG, _PSEUDO, _BREAK, _LINK = "neg", "unc", "strong", "pseudo", "break", "link"


@dataclass(frozen=True, slots=True)
class Mention:
    """One finding mention: `label` is a CheXpert label or `lexicon.NO_FINDING_EXCLUSION`.

    `start`/`end` are character offsets in `sentence` (the lower-cased, whitespace-normalised
    sentence number `sentence_index` of the report); `state` is 1.0, 0.0 or -1.0.
    """

    label: str
    state: float
    phrase: str
    sentence_index: int
    sentence: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class _Trigger:
    start: int
    end: int
    kind: str
    pre: bool  # applies to mentions after it
    post: bool  # applies to mentions before it


class _Vocabulary:
    """The compiled lexicon: phrase -> labels, phrase -> trigger kind, qualifier polarity."""

    def __init__(self, compile_phrases: Callable[[Iterable[str]], re.Pattern[str]] = phrase_regex) -> None:
        labels_of: dict[str, set[str]] = {}
        for label, phrases in lexicon.MENTIONS.items():
            for phrase in phrases:
                labels_of.setdefault(phrase, set()).add(label)
        for phrase in lexicon.NO_FINDING_EXCLUSIONS:
            labels_of.setdefault(phrase, set()).add(lexicon.NO_FINDING_EXCLUSION)
        self.labels: dict[str, tuple[str, ...]] = {p: tuple(sorted(labels)) for p, labels in labels_of.items()}
        anatomy: dict[str, set[str]] = {}
        for label, phrases in lexicon.ANATOMY.items():
            for phrase in phrases:
                if phrase in self.labels:
                    raise ValueError(f"labeler lexicon: {phrase!r} is both a mention and anatomy; keep one")
                anatomy.setdefault(phrase, set()).add(label)
        self.anatomy: dict[str, tuple[str, ...]] = {phrase: tuple(sorted(labels)) for phrase, labels in anatomy.items()}
        for phrase in lexicon.NON_MENTIONS:
            if phrase in self.labels or phrase in self.anatomy:
                raise ValueError(f"labeler lexicon: {phrase!r} is both a mention and a non-mention; keep one")
            self.labels[phrase] = ()
        self.mention_re = compile_phrases([*self.labels, *self.anatomy])
        self.signs = frozenset(lexicon.SIGNS)
        self.uncertain = frozenset(lexicon.UNCERTAIN_MENTIONS)
        self.implies = dict(lexicon.IMPLIES)
        for name, phrases in (("signs", self.signs), ("uncertain mentions", self.uncertain), ("implies", self.implies)):
            unknown = set(phrases) - set(self.labels)
            if unknown:
                raise ValueError(f"labeler lexicon: {name} {sorted(unknown)} must also be listed in MENTIONS")

        self.triggers: dict[str, tuple[str, bool, bool]] = {}
        groups = (
            (lexicon.PRE_NEGATION, _NEG, True, False),
            (lexicon.POST_NEGATION, _NEG, False, True),
            (lexicon.BOTH_NEGATION, _NEG, True, True),
            (lexicon.STRONG_UNCERTAINTY, _STRONG, True, True),
            (lexicon.PRE_UNCERTAINTY, _UNC, True, False),
            (lexicon.LINKING_UNCERTAINTY, _LINK, True, False),
            (lexicon.POST_UNCERTAINTY, _UNC, False, True),
            (lexicon.BOTH_UNCERTAINTY, _UNC, True, True),
            (lexicon.PSEUDO_NEGATION, _PSEUDO, True, False),
            (lexicon.PRESENCE, _BREAK, False, False),
        )
        for phrases, kind, pre, post in groups:
            for phrase in phrases:
                if phrase in self.triggers:
                    raise ValueError(f"labeler lexicon: trigger {phrase!r} listed twice; keep it in one list")
                self.triggers[phrase] = (kind, pre, post)
        self.trigger_re = compile_phrases(self.triggers)
        self.clause_final = frozenset(lexicon.CLAUSE_FINAL_UNCERTAINTY)
        missing = self.clause_final - set(self.triggers)
        if missing:
            raise ValueError(f"labeler lexicon: clause-final hedges {sorted(missing)} must also be PRE_UNCERTAINTY")

        self.qualifiers: dict[str, tuple[float, bool]] = {}
        for phrases, state, weak in (
            (lexicon.QUALIFIERS_POSITIVE, POSITIVE, False),
            (lexicon.QUALIFIERS_NEGATIVE, NEGATIVE, False),
            (lexicon.QUALIFIERS_UNCERTAIN, UNCERTAIN, False),
            (lexicon.QUALIFIERS_WEAK_UNCERTAIN, UNCERTAIN, True),
        ):
            for phrase in phrases:
                if phrase in self.qualifiers:
                    raise ValueError(f"labeler lexicon: qualifier {phrase!r} listed twice; keep it in one list")
                self.qualifiers[phrase] = (state, weak)
        self.qualifier_re = compile_phrases(self.qualifiers)


class RuleLabeler:
    """The labeler with its compiled vocabulary; `label_report` uses one shared instance.

    `compile_phrases` turns a phrase list into a regex; the default builds a character trie
    (fast). Any builder that matches whole words, longest phrase first, gives the same labels.
    """

    def __init__(self, compile_phrases: Callable[[Iterable[str]], re.Pattern[str]] = phrase_regex) -> None:
        self.vocab = _Vocabulary(compile_phrases)

    def mentions(self, text: str) -> list[Mention]:
        """Every mention in `text` with its state, in reading order."""
        mentions: list[Mention] = []
        for index, sentence in enumerate(split_sentences(text)):
            mentions.extend(_sentence_mentions(sentence, index, self.vocab))
        return mentions

    def label(self, text: str) -> dict[str, float | None]:
        """The 14 labels of `text`; all None when it holds no word."""
        if not isinstance(text, str):
            raise TypeError(f"label_report: expected report text (str), got {type(text).__name__}")
        if not _WORD.search(text):
            return dict.fromkeys(CHEXPERT_LABELS)
        return aggregate(self.mentions(text))


@lru_cache(maxsize=1)
def _default() -> RuleLabeler:
    """Compiled once per process, on first use (no import-time work)."""
    return RuleLabeler()


def split_sentences(text: str, lowercase: bool = True) -> list[str]:
    """Sentences with whitespace collapsed (lower-cased unless `lowercase=False`); empty pieces dropped.

    Sentence ends are ".", "!" or "?" followed by whitespace, or a blank line; a period after an
    abbreviation such as "vs." or "e.g." ends none. Decimals ("1.5 cm") never end one (no
    whitespace after the period). Both casings split identically, so index k of one is
    sentence k of the other (`Mention.sentence_index`).
    """
    sentences = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
        if end == start:
            continue
        if match.group() == "." and _last_word(text[max(start, end - 8) : end - 1]) in _ABBREVIATIONS:
            continue
        _append_sentence(sentences, text[start:end], lowercase)
        start = end
    _append_sentence(sentences, text[start:], lowercase)
    return sentences


def _last_word(text: str) -> str:
    words = text.split()
    return words[-1].lower() if words else ""


def _append_sentence(sentences: list[str], piece: str, lowercase: bool) -> None:
    piece = _LIST_MARKER.sub("", " ".join(piece.split()))
    if piece and _WORD.search(piece):
        sentences.append(piece.lower() if lowercase else piece)


def _words_between(sentence: str, start: int, end: int, mention_spans: list[tuple[int, int]]) -> int:
    """Words in sentence[start:end] that are not inside another mention (list items do not count)."""
    if end <= start:
        return 0
    count = len(_COUNTED_WORD.findall(sentence, start, end))
    for m_start, m_end in mention_spans:
        if m_start >= start and m_end <= end:
            count -= len(_WORD.findall(sentence, m_start, m_end))
    return count


def _pre_kind(sentence: str, start: int, triggers: list[_Trigger], i: int, spans: list, clause: tuple) -> str | None:
    """Kind of trigger `i` (the nearest before the mention) if it applies to the mention."""
    before = triggers[i]
    if before.start < clause[0] or not (before.pre or before.kind == _PSEUDO):
        return None
    if _words_between(sentence, before.end, start, spans) > SCOPE_WORDS:
        return None
    if before.kind == _LINK:
        # "no consolidation to suggest pneumonia": the linked finding shares the negation.
        if i > 0 and triggers[i - 1].kind == _NEG and triggers[i - 1].pre and triggers[i - 1].start >= clause[0]:
            if _words_between(sentence, triggers[i - 1].end, start, spans) <= SCOPE_WORDS + 3:
                return _NEG
        return _UNC
    return before.kind


def _trigger_state(
    sentence: str,
    start: int,
    end: int,
    triggers: list[_Trigger],
    starts: list[int],
    spans: list[tuple[int, int]],
    clause: tuple[int, int],
) -> tuple[float, str | None, str | None]:
    """(state, kind of the trigger before, kind of the trigger after) of a mention at
    sentence[start:end], from the nearest trigger on each side in its clause.

    `starts` are the triggers' start offsets (sorted), `spans` every mention's (start, end).
    A kind is None when no trigger on that side applies.
    """
    pre = post = None
    i = bisect.bisect_left(starts, start) - 1
    while i >= 0 and triggers[i].end > start:  # a trigger overlapping the mention is no trigger for it
        i -= 1
    if i >= 0:
        pre = _pre_kind(sentence, start, triggers, i, spans, clause)
    j = bisect.bisect_left(starts, end)
    if j < len(triggers):
        after = triggers[j]
        if after.end <= clause[1] and after.post:
            if _words_between(sentence, end, after.start, spans) <= SCOPE_WORDS:
                post = after.kind
    kinds = (pre, post)
    if _STRONG in kinds:
        return UNCERTAIN, pre, post
    if _NEG in kinds:
        return NEGATIVE, pre, post
    if _UNC in kinds:
        return UNCERTAIN, pre, post
    return POSITIVE, pre, post


def _qualifier(
    sentence: str, start: int, end: int, qualifiers: list[tuple[int, int, float, bool]], clause: tuple[int, int]
) -> tuple[int, int, float] | None:
    """(start, end, polarity) of the nearest qualifier of an anatomy phrase in its clause, strong
    qualifiers before weak ones; None when there is none within `QUALIFIER_WORDS` words."""
    best: tuple[bool, int, tuple[int, int, float]] | None = None
    for q_start, q_end, state, weak in qualifiers:
        if q_start < clause[0] or q_end > clause[1] or (q_start < end and q_end > start):
            continue
        gap_start, gap_end = (end, q_start) if q_start >= end else (q_end, start)
        distance = len(_WORD.findall(sentence, gap_start, gap_end))
        if distance > QUALIFIER_WORDS:
            continue
        if best is None or (weak, distance) < best[:2]:
            best = (weak, distance, (q_start, q_end, state))
    return None if best is None else best[2]


def _clauses(sentence: str) -> list[tuple[int, int]]:
    """(start, end) of each clause; the cheap test skips the regex for most short sentences."""
    if not any(mark in sentence for mark in (",", ";", ":", " and t", " with t")):
        return [(0, len(sentence))]
    bounds = [0]
    for match in _CLAUSE_BREAK.finditer(sentence):
        bounds.extend((match.start(), match.end()))
    bounds.append(len(sentence))
    return [(bounds[k], bounds[k + 1]) for k in range(0, len(bounds), 2)]


def _sentence_mentions(sentence: str, index: int, vocab: _Vocabulary) -> list[Mention]:
    found = [(m.start(), m.end(), m.group()) for m in vocab.mention_re.finditer(sentence)]
    if not found:
        return []
    clauses = _clauses(sentence)
    clause_starts = [c[0] for c in clauses]
    triggers = []
    for m in vocab.trigger_re.finditer(sentence):
        kind, pre, post = vocab.triggers[m.group()]
        if not post and m.group() in vocab.clause_final:
            clause_end = clauses[bisect.bisect_right(clause_starts, m.start()) - 1][1]
            post = not sentence[m.end() : clause_end].strip(" .,!?")
        triggers.append(_Trigger(m.start(), m.end(), kind, pre, post))
    spans = [(s, e) for s, e, _ in found]
    starts = [t.start for t in triggers]
    qualifiers: list[tuple[int, int, float, bool]] | None = None

    mentions: list[Mention] = []
    # The previous item of a coordinated list: (end, clause, negated by a trigger before it).
    previous: tuple[int, tuple[int, int], bool] | None = None
    for start, end, phrase in found:
        clause = clauses[bisect.bisect_right(clause_starts, start) - 1]
        labels = vocab.labels.get(phrase)
        if labels is None:  # anatomy: a mention only with a qualifier
            previous = None
            if qualifiers is None:
                qualifiers = [
                    (q.start(), q.end(), *vocab.qualifiers[q.group()]) for q in vocab.qualifier_re.finditer(sentence)
                ]
            qualifier = _qualifier(sentence, start, end, qualifiers, clause)
            if qualifier is None:
                continue
            state = qualifier[2]
            if state == POSITIVE:
                # Hedges and negations sit next to the qualifier: "the heart may be mildly enlarged".
                at = qualifier[:2] if qualifier[0] >= end else (start, end)
                state = _trigger_state(sentence, *at, triggers, starts, spans, clause)[0]
            labels = vocab.anatomy[phrase]
        else:
            state, pre, post = _trigger_state(sentence, start, end, triggers, starts, spans, clause)
            chained = (
                pre is None
                and post is None
                and previous is not None
                and previous[2]
                and previous[1] == clause
                and _COORDINATION.match(sentence[previous[0] : start]) is not None
                # no trigger in the gap: "no effusion, likely atelectasis" is no list
                and bisect.bisect_left(starts, previous[0]) == bisect.bisect_left(starts, start)
            )
            if chained:
                # One negation covers a whole list: "no effusion, focal consolidation, or pneumothorax".
                state = NEGATIVE
            previous = (end, clause, chained or (state == NEGATIVE and pre == _NEG))
            if not labels:
                continue
            if state == POSITIVE and phrase in vocab.uncertain:
                state = UNCERTAIN
        mentions.extend(Mention(label, state, phrase, index, sentence, start, end) for label in labels)
        implied = vocab.implies.get(phrase)
        if implied is not None and state != NEGATIVE:
            mentions.append(Mention(implied[0], implied[1], phrase, index, sentence, start, end))
    if any(m.phrase in vocab.signs for m in mentions):
        # A sign ("perihilar haziness") yields to a named mention of the same finding in its
        # sentence: "perihilar haziness may reflect mild edema" is uncertain, not positive.
        named = {m.label for m in mentions if m.phrase not in vocab.signs}
        mentions = [m for m in mentions if m.phrase not in vocab.signs or m.label not in named]
    return _disjunctions(mentions)


def _disjunctions(mentions: list[Mention]) -> list[Mention]:
    """ "atelectasis or pneumonia" (not negated) is uncertain for both, as CheXpert reads it."""
    out = list(mentions)
    for k in range(len(out) - 1):
        a, b = out[k], out[k + 1]
        if a.start == b.start or a.state != POSITIVE or b.state != POSITIVE or a.label == b.label:
            continue
        if _DISJUNCTION.match(a.sentence[a.end : b.start]):
            out[k] = Mention(a.label, UNCERTAIN, a.phrase, a.sentence_index, a.sentence, a.start, a.end)
            out[k + 1] = Mention(b.label, UNCERTAIN, b.phrase, b.sentence_index, b.sentence, b.start, b.end)
    return out


def extract_mentions(text: str) -> list[Mention]:
    """Every mention in `text` with its state, in reading order (what `label_report` aggregates)."""
    return _default().mentions(text)


def aggregate(mentions: Iterable[Mention]) -> dict[str, float | None]:
    """Per-label report state (positive > uncertain > negated > None) plus the No Finding rule."""
    labels: dict[str, float | None] = dict.fromkeys(CHEXPERT_LABELS)
    excluded = False
    for mention in mentions:
        if mention.label == lexicon.NO_FINDING_EXCLUSION:
            excluded = excluded or mention.state != NEGATIVE
            continue
        current = labels[mention.label]
        if current is None or _PRIORITY[mention.state] > _PRIORITY[current]:
            labels[mention.label] = mention.state
    abnormal = any(labels[name] in (POSITIVE, UNCERTAIN) for name in PATHOLOGY_LABELS)
    labels["No Finding"] = None if (abnormal or excluded) else POSITIVE
    return labels


# CheXpert's label hierarchy: a child finding is a kind of its parent.
HIERARCHY: dict[str, tuple[str, ...]] = {
    "Lung Opacity": ("Edema", "Consolidation", "Pneumonia", "Lung Lesion", "Atelectasis"),
    "Enlarged Cardiomediastinum": ("Cardiomegaly",),
}


def apply_hierarchy(labels: dict[str, float | None]) -> dict[str, float | None]:
    """A copy of `labels` where a parent is at least as present as its most present child.

    A positive child makes its parent positive; an uncertain child makes a blank or negated
    parent uncertain; a negated child says nothing about the parent. The labeler's own output
    does not do this (neither do the CheXpert labeler nor MIMIC-CXR's label files); use it when
    comparing with labels that were propagated, such as CheXpert's hierarchical training targets.
    """
    out = dict(labels)
    for parent, children in HIERARCHY.items():
        for child in children:
            value = out[child]
            if value in (POSITIVE, UNCERTAIN) and (out[parent] is None or _PRIORITY[value] > _PRIORITY[out[parent]]):
                out[parent] = value
    return out


def label_report(text: str, hierarchy: bool = False) -> dict[str, float | None]:
    """The 14 CheXpert labels of one report text (all None for empty or whitespace-only text).

    Label the section you mean (impression, else findings, as MIMIC-CXR did); this function
    labels exactly the text it is given. `hierarchy=True` applies `apply_hierarchy`.
    """
    labels = _default().label(text)
    return apply_hierarchy(labels) if hierarchy else labels


def label_reports(texts: Iterable[str], hierarchy: bool = False) -> list[dict[str, float | None]]:
    """`label_report` over a batch, in order (one dict per text)."""
    return [label_report(text, hierarchy) for text in texts]
