"""MIMIC-CXR report sectioning, following the rules of the official `create_section_files.py`.

The rules (docs/mimic-cxr-format.md §8), re-implemented here:
1. a header is an upper-case run of letters, spaces, ``()/,-`` at the start of a line (after
   the one leading space MIMIC puts on every line) that ends with ``:`` and whitespace; text
   before the first header is the ``preamble``; a report without headers is ``full report``;
2. header names are lower-cased and normalised through a table of variants and misspellings,
   then by keyword (impression / findings / history / comparison / addendum), then by view
   descriptors (-> findings);
3. empty findings / impression sections are dropped;
4. with neither findings nor impression, the last section is cut at its first blank line and
   the rest becomes ``last_paragraph``;
5. the last occurrence of each section wins.

Not reproduced: the official script's hand-made list of 54 special-case studies (fixed section
names or character ranges for individual MIMIC study ids). Differences we chose: a header is
also recognised without the leading space and on the first line (reports written by other
tools), and section text is whitespace-normalised (one line, single spaces) for training.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADER = re.compile(r"(?:^|\n) ?([A-Z][A-Z ()/,\-]*):\s")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")

# Variant header names -> canonical names (lower-case); our own list of the variants the
# official table covers, plus common misspellings.
_NAME_MAP: dict[str, str] = {
    "comparisons": "comparison",
    "comparison exam": "comparison",
    "comparison film": "comparison",
    "comparison films": "comparison",
    "comparison study": "comparison",
    "reference exam": "comparison",
    "comparision": "comparison",
    "comparsion": "comparison",
    "compariosn": "comparison",
    "clinical history": "history",
    "clinical information": "history",
    "patient history": "history",
    "pfi": "history",
    "reason for examination": "indication",
    "reason for exam": "indication",
    "clinical indication": "indication",
    "indications": "indication",
    "conclusion": "impression",
    "conclusions": "impression",
    "findings and impression": "impression",
    "findings/impression": "impression",
    "impresson": "impression",
    "imoression": "impression",
    "impresion": "impression",
    "imprssion": "impression",
    "impressions": "impression",
    "ndication": "impression",  # the official table's quirk, kept for identical conclusions
    "chest, two views": "findings",
    "finding": "findings",
    "finidngs": "findings",
    "findngs": "findings",
    "findins": "findings",
    "fidings": "findings",
    "exam": "examination",
    "type of examination": "examination",
    "recommendation": "recommendations",
    "recommendation(s)": "recommendations",
    "wetread": "wet read",
}
_KEYWORDS: tuple[str, ...] = ("impression", "findings", "history", "comparison", "addendum")
_VIEW_DESCRIPTORS: tuple[str, ...] = (
    "chest",
    "portable",
    "pa and lateral",
    "pa and lat",
    "two views",
    "frontal view",
    "ap view",
    "one view",
    "lateral view",
    "bone window",
    "frontal upright",
    "ribs",
    "frontal",
    "supine",
)


@dataclass(frozen=True)
class ReportSections:
    """The sections the pipeline keeps, whitespace-normalised; None when absent."""

    findings: str | None
    impression: str | None
    last_paragraph: str | None
    comparison: str | None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "findings": self.findings,
            "impression": self.impression,
            "last_paragraph": self.last_paragraph,
            "comparison": self.comparison,
        }

    @property
    def conclusion(self) -> str:
        """The text CheXpert labels are computed on: impression, else findings, else the fallbacks."""
        return self.impression or self.findings or self.last_paragraph or self.comparison or ""


def normalise_section_name(name: str) -> str:
    """Map a raw header (any case, no colon) to its canonical lower-case section name."""
    name = " ".join(name.lower().split())
    if name in _NAME_MAP:
        return _NAME_MAP[name]
    for keyword in _KEYWORDS:
        if keyword in name:
            return keyword
    if any(descriptor in name for descriptor in _VIEW_DESCRIPTORS):
        return "findings"
    return name


def split_sections(text: str) -> list[tuple[str, str]]:
    """Split a report into `(canonical name, raw text)` pairs in order of appearance."""
    sections: list[tuple[str, str]] = []
    starts: list[tuple[str, int, int]] = []  # (name, header start, body start)
    position = 0
    while True:
        match = _HEADER.search(text, position)
        if match is None:
            break
        starts.append((normalise_section_name(match.group(1)), match.start(), match.end()))
        line_end = text.find("\n", match.end(1))
        # The next header may start on the very next line: resume at this line's newline.
        position = len(text) if line_end < 0 else line_end
    if not starts:
        return [("full report", text)]
    preamble = text[: starts[0][1]]
    if preamble.strip():
        sections.append(("preamble", preamble))
    for index, (name, _, body_start) in enumerate(starts):
        body_end = starts[index + 1][1] if index + 1 < len(starts) else len(text)
        sections.append((name, text[body_start:body_end]))
    return sections


def _clean(text: str) -> str:
    return " ".join(text.split())


def extract_sections(text: str) -> ReportSections:
    """Findings, impression, last paragraph and comparison of one report (last occurrence wins)."""
    sections = [
        (name, body)
        for name, body in split_sections(text.replace("\r\n", "\n"))
        if not (name in ("findings", "impression") and not body.strip())
    ]
    names = {name for name, _ in sections}
    if "findings" not in names and "impression" not in names and sections:
        name, body = sections[-1]
        parts = _BLANK_LINE.split(body.strip("\n"), maxsplit=1)
        if len(parts) == 2 and parts[1].strip():
            sections[-1] = (name, parts[0])
            sections.append(("last_paragraph", parts[1]))
    found: dict[str, str | None] = {"findings": None, "impression": None, "last_paragraph": None, "comparison": None}
    for name, body in sections:
        if name in found:
            cleaned = _clean(body)
            found[name] = cleaned or found[name]
    return ReportSections(**found)
