"""Compile literal phrase lists into fast word-bounded regexes.

A plain alternation of a few hundred phrases makes Python's `re` try every branch at every
character; a regex shaped like a character trie tries one branch per character instead, which is
what makes the labeler run at thousands of reports per second on one core.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def _trie_pattern(node: dict[str, dict]) -> str:
    """Regex for one trie node; the empty key marks "a phrase may end here"."""
    terminal = "" in node
    branches = [re.escape(char) + _trie_pattern(child) for char, child in sorted(node.items()) if char]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 and not terminal else "(?:" + "|".join(branches) + ")"
    if len(branches) == 1 and terminal:
        body = "(?:" + branches[0] + ")"
    return body + "?" if terminal else body


def phrase_regex(phrases: Iterable[str]) -> re.Pattern[str]:
    """One regex matching any of `phrases` as whole words, preferring the longest phrase.

    Greedy optional groups try the longer continuation first; the trailing `\\b` makes the
    engine back off to a shorter phrase when the longer one would end inside a word.
    """
    trie: dict[str, dict] = {}
    for phrase in phrases:
        if not phrase:
            raise ValueError("phrase_regex: empty phrase in the vocabulary; remove it")
        node = trie
        for char in phrase:
            node = node.setdefault(char, {})
        node[""] = {}
    if not trie:
        raise ValueError("phrase_regex: empty vocabulary")
    return re.compile(r"(?<![\w-])" + _trie_pattern(trie) + r"(?![\w-])")

