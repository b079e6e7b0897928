"""The labeler on the rule table: >= 200 real-style sentences, each with its full 14-label output."""

from __future__ import annotations

import collections

import pytest

from lit_medxchat.core.constants import CHEXPERT_LABELS
from lit_medxchat.labeler import label_report
from tests.labeler.rule_table import RULES, TABLE, expected_labels


def test_the_table_covers_every_rule_and_category():
    per_rule = collections.Counter(rule for rule, _, _ in TABLE)
    assert len(TABLE) >= 200
    assert set(per_rule) == set(RULES), set(RULES) ^ set(per_rule)
    assert min(per_rule.values()) >= 4, per_rule
    stated = {name for _, _, spec in TABLE for name, value in expected_labels(spec).items() if value == 1.0}
    negated = {name for _, _, spec in TABLE for name, value in expected_labels(spec).items() if value == 0.0}
    uncertain = {name for _, _, spec in TABLE for name, value in expected_labels(spec).items() if value == -1.0}
    assert stated == set(CHEXPERT_LABELS)
    assert negated >= set(CHEXPERT_LABELS) - {"No Finding", "Pleural Other"}
    assert len(uncertain) >= 8


@pytest.mark.parametrize(("rule", "text", "spec"), TABLE, ids=[f"{r}:{t[:40]}" for r, t, _ in TABLE])
def test_sentence_gets_its_14_labels(rule, text, spec):
    assert label_report(text) == expected_labels(spec)
