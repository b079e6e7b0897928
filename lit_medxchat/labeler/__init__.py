"""CheXpert-style rule labeler: report text -> the 14 CheXpert labels.

`label_report(text)` gives every name in `constants.CHEXPERT_LABELS` the value 1.0 (positive
mention), 0.0 (negated), -1.0 (uncertain) or None (not mentioned); "No Finding" is 1.0 or None.
Our own lexicon and rules (docs/labeler.md); pure Python, no downloads, thousands of reports/s.
"""

from __future__ import annotations

from lit_medxchat.labeler.rules import (
    Mention,
    RuleLabeler,
    apply_hierarchy,
    extract_mentions,
    label_report,
    label_reports,
    split_sentences,
)

__all__ = [
    "Mention",
    "RuleLabeler",
    "apply_hierarchy",
    "extract_mentions",
    "label_report",
    "label_reports",
    "split_sentences",
]
