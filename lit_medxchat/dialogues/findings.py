"""What a report says about each finding: the sentences, location, size/severity and type.

VQA location and size-severity-type answers and the text-to-CXR prompts are read from the
report's own sentences ("Small right pleural effusion." -> location "right", size "small"),
found through the labeler's positive mentions, so they can only state what the report states.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from lit_medxchat.labeler import Mention, extract_mentions, split_sentences

# Report sections read for finding sentences, in reading order (findings before impression).
SECTION_ORDER: tuple[str, ...] = ("findings", "impression")
FALLBACK_SECTIONS: tuple[str, ...] = ("last_paragraph",)

_LOBE = re.compile(r"\b(right|left)\s+(upper|middle|lower)\s+lobes?\b")
_LINGULA = re.compile(r"\blingula(?:r)?\b")
_ZONE = re.compile(
    r"\b(right|left)(?:-sided)?\s+(?:lung\s+)?"
    r"(base|basilar|basal|apex|apical|mid[- ]?lung|perihilar|infrahilar|hilar)\b"
)
_ZONE_AFTER = re.compile(
    r"\b(base|apex|apices|bases)\b.{0,12}?\b(right|left)\b|\b(right|left)\b.{0,12}?\b(base|apex)\b"
)
_BILATERAL = re.compile(r"\b(?:bilateral(?:ly)?|both|bibasilar|bibasal|biapical|bilateral lower lobes?)\b")
_SIDE = re.compile(r"\b(right|left)(?:-sided| sided)?\b")
_RETROCARDIAC = re.compile(r"\bretrocardiac\b")
_ZONE_NAMES = {
    "base": "base",
    "basilar": "base",
    "basal": "base",
    "apex": "apex",
    "apical": "apex",
    "mid lung": "mid lung",
    "midlung": "mid lung",
    "mid-lung": "mid lung",
    "perihilar": "perihilar",
    "infrahilar": "infrahilar",
    "hilar": "perihilar",
}

_SEVERITY = re.compile(
    r"\b(?:(trace|tiny|small|minimal|mild|moderate|large|severe|massive|marked|extensive)"
    r"(?:(?:\s*-\s*|\s+)to(?:\s*-\s*|\s+)(small|moderate|large|severe|marked))?)(?:\s*-?\s*sized?)?\b"
)
_MEASURE = re.compile(r"\b(\d+(?:\.\d+)?)\s*-?\s*(mm|cm)\b")
# Words that are sizes (asked "how large") rather than severities (asked "how severe").
SIZE_WORDS = frozenset({"trace", "tiny", "small", "large", "massive"})
# For "moderate" and ranges, the finding decides: fluid, air and lesions have a size.
SIZED_LABELS = frozenset({"Pleural Effusion", "Pneumothorax", "Lung Lesion"})
_TYPES: dict[str, tuple[tuple[str, str], ...]] = {
    "Lung Lesion": (("mass", "mass"), ("nodul", "nodule"), ("lesion", "lesion")),
    "Edema": (("interstitial", "interstitial"), ("alveolar", "alveolar"), ("congestion", "vascular congestion")),
    "Pleural Effusion": (("loculated", "loculated"), ("layering", "layering")),
    "Pneumothorax": (("tension", "tension"),),
    "Atelectasis": (("plate", "plate-like"), ("linear", "linear"), ("subsegmental", "subsegmental")),
    "Consolidation": (
        ("multifocal", "multifocal"),
        ("patchy", "patchy"),
        ("focal", "focal"),
        ("dense", "dense"),
        ("lobar", "lobar"),
    ),
}
# Where the words describing one finding end: "consistent with" links a finding to its name
# ("right lower lobe opacity consistent with consolidation"), so it is no boundary.
# An "and" right after a lobe or a side joins two sites of one finding ("left lower lobe and right
# middle lobe consolidation", "right and left lower lobes"), so it is no boundary either.
_BOUNDARY = re.compile(
    r",|;|:|(?<!lobe )(?<!lobes )(?<!right )(?<!left )\band\b"
    r"|(?<!consistent )(?<!compatible )\bwith\b|\bbut\b|\bwhich\b"
)
_BOTH_LOBES = re.compile(r"\b(?:right and left|left and right|both)\s+(?:upper|middle|lower)\s+lobes\b")


@dataclass(frozen=True)
class FindingFacts:
    """Facts about one CheXpert label from its positive mentions (empty strings when not stated).

    `sentences` are the report's own sentences, original casing; `location` is canonical
    ("right", "left", "bilateral", "right lower lobe", "left base", "lingula", ...); `size` is a
    size/severity word or range ("small", "mild to moderate") or a measurement ("1.5 cm").
    """

    label: str
    sentences: tuple[str, ...] = ()
    location: str = ""
    size: str = ""
    kind: str = ""


@dataclass
class ReportFacts:
    """A report split into sentences (original casing) with the labeler's mentions."""

    sentences: list[str] = field(default_factory=list)
    mentions: list[Mention] = field(default_factory=list)

    def positive_sentences(self, label: str) -> tuple[str, ...]:
        """Sentences with a positive mention of `label`, deduplicated, in reading order."""
        seen: dict[str, str] = {}
        for mention in self.mentions:
            if mention.label == label and mention.state == 1.0:
                sentence = self.sentences[mention.sentence_index]
                seen.setdefault(sentence.lower(), sentence)
        return tuple(seen.values())

    def facts(self, label: str) -> FindingFacts:
        """Location/size/type of `label` from its positive mentions (the first that states each).

        Mentions on opposite sides ("Small right effusion. Trace left effusion.") make the
        location "bilateral" and leave the size unstated (the two differ). Support devices are
        distinct objects: their facts come from the first named device alone.
        """
        positive = [m for m in self.mentions if m.label == label and m.state == 1.0]
        if label == "Support Devices":
            named = [m for m in positive if device_name(m.phrase)]
            if named:
                first = named[0]
                window = _window(first)
                sentence = self.sentences[first.sentence_index]
                return FindingFacts(label, (sentence,), parse_location(window), "", device_name(first.phrase))
        locations: list[str] = []
        size = kind = ""
        for mention in positive:
            window = _window(mention)
            if place := parse_location(window):
                locations.append(place)
            size = size or parse_size(window, label)
            kind = kind or parse_kind(mention.phrase + " " + window, label)
        location = locations[0] if locations else ""
        sides = {place.split()[0] for place in locations} & {"right", "left", "bilateral"}
        if len(sides) > 1:
            location, size = "bilateral", ""
        return FindingFacts(label, self.positive_sentences(label), location, size, kind)


def _window(mention: Mention) -> str:
    """The words around a mention that describe it: back to the previous boundary or mention,
    forward to the next boundary ("small right pleural effusion", "consolidation in the right lower lobe")."""
    sentence = mention.sentence
    before = sentence[: mention.start]
    cut = 0
    for match in _BOUNDARY.finditer(before):
        cut = match.end()
    after = sentence[mention.end :]
    stop = _BOUNDARY.search(after)
    after = after[: stop.start()] if stop else after
    return f"{before[cut:]} {mention.phrase} {after}".strip()


def parse_location(text: str) -> str:
    """Canonical location in lower-case `text`, most specific first; "" when none is stated."""
    if _BOTH_LOBES.search(text):
        return "bilateral"
    lobes = list(dict.fromkeys(f"{m.group(1)} {m.group(2)} lobe" for m in _LOBE.finditer(text)))
    if lobes:
        return " and ".join(lobes)
    if _LINGULA.search(text):
        return "lingula"
    if _BILATERAL.search(text):
        return "bilateral"
    if match := _ZONE.search(text):
        zone = _ZONE_NAMES.get(match.group(2).replace("-", " "), match.group(2))
        return f"{match.group(1)} {zone}"
    if _RETROCARDIAC.search(text):
        return "retrocardiac"
    if match := _ZONE_AFTER.search(text):
        side = match.group(2) or match.group(3)
        zone = match.group(1) or match.group(4)
        return f"{side} {_ZONE_NAMES.get(zone.rstrip('s').replace('apice', 'apex'), 'base')}"
    sides = {m.group(1) for m in _SIDE.finditer(text)}
    if len(sides) == 2:
        return "bilateral"
    return sides.pop() if sides else ""


def parse_size(text: str, label: str) -> str:
    """Size/severity word or range ("small", "mild to moderate"), or a measurement for lesions."""
    if label == "Lung Lesion" and (match := _MEASURE.search(text)):
        return f"{match.group(1)} {match.group(2)}"
    if match := _SEVERITY.search(text):
        return f"{match.group(1)} to {match.group(2)}" if match.group(2) else match.group(1)
    return ""


def parse_kind(text: str, label: str) -> str:
    """The type of a finding where the paper's "type" applies (nodule vs mass, interstitial edema)."""
    for needle, kind in _TYPES.get(label, ()):
        if needle in text:
            return kind
    return ""


_ACRONYMS = {
    "picc": "PICC",
    "et": "ET",
    "ng": "NG",
    "og": "OG",
    "icd": "ICD",
    "aicd": "AICD",
    "ij": "IJ",
    "iabp": "IABP",
    "lvad": "LVAD",
    "swan-ganz": "Swan-Ganz",
    "swan": "Swan",
    "ganz": "Ganz",
    "dobhoff": "Dobhoff",
    "port-a-cath": "Port-A-Cath",
    "portacath": "Portacath",
}


def device_name(phrase: str) -> str:
    """A support device's name as reports write it ("PICC line"); "" for plural or generic phrases
    ("lines and tubes", "support devices"), which then keep the generic name."""
    if phrase.endswith("s") or phrase in ("support device", "monitoring device", "device"):
        return ""
    return " ".join(_ACRONYMS.get(word, word) for word in phrase.split())


def is_size(word: str, label: str) -> bool:
    """Whether `word` (a `parse_size` answer) answers "how large" rather than "how severe"."""
    first = word.split(" ")[0]
    if first[:1].isdigit() or first in SIZE_WORDS:
        return True
    return first == "moderate" and label in SIZED_LABELS


def read_report(sections: dict[str, str | None], report_text: str) -> ReportFacts:
    """Sentences and mentions of the findings and impression (else the fallback section, else
    the whole report text), in reading order."""
    texts = [sections.get(name) for name in SECTION_ORDER]
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        texts = [t for t in (sections.get(name) for name in FALLBACK_SECTIONS) if t and t.strip()]
    if not texts and report_text.strip():
        texts = [report_text]
    facts = ReportFacts()
    for text in texts:
        offset = len(facts.sentences)
        facts.sentences.extend(split_sentences(text, lowercase=False))
        facts.mentions.extend(
            replace(m, sentence_index=m.sentence_index + offset) if offset else m for m in extract_mentions(text)
        )
    return facts
