"""PTB-style tokenisation as pycocoevalcap applies it, in pure Python (no Java, no CoreNLP).

pycocoevalcap tokenises every caption with Stanford CoreNLP 3.4.1's ``PTBTokenizer -preserveLines
-lowerCase`` and then drops the tokens in its ``PUNCTUATIONS`` list. BLEU, ROUGE-L, CIDEr and METEOR
all see those tokens, so matching pycocoevalcap's numbers means matching this tokenisation.

We reproduce the lexer's longest-match behaviour for the constructs found in radiology reports
(measurements such as ``2.5cm`` -> ``2.5 cm`` but ``5mm`` kept, ``e.g.``/``p.m.``/``dr.`` kept with
their period, ``left-sided``/``s/p``/``10/12/2015``/``3:45`` kept whole, clitics ``'s``/``n't`` split,
brackets written as ``-lrb-`` ... which pycocoevalcap does *not* remove because its list holds the
upper-case ``-LRB-``). ``tests/callbacks/test_nlg_parity.py`` checks it token for token against the
Java tokenizer on a report corpus; rarities of newswire (``'tis``, ``y'all``, state abbreviations
before capitals) are not reproduced.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

# pycocoevalcap's list, verbatim: note the upper-case bracket names, which never match lower-cased output.
PTB_PUNCTUATIONS: frozenset[str] = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

_UNICODE = str.maketrans(
    {
        "\u2019": "'",
        "\u2018": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2014": " -- ",
        "\u2013": " -- ",
        "\u2026": " ... ",
        "\u00a0": " ",
    }
)

_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "{": "-lcb-", "}": "-rcb-", "[": "-lsb-", "]": "-rsb-"}

# Abbreviations CoreNLP keeps together with their final period (case-insensitive here; the lexer's
# lists are title-cased, but lower-case forms such as "dr." behave the same in its output).
_ABBREV = (
    "mr|mrs|ms|miss|drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs|govs?|adm|rev|maj|sgt|cpl|pvt|capt|ste?"
    "|ave|pres|lieut|hon|brig|co?mdr|pfc|spc|supts?|det|mmes?|mlles?"
    "|inc|cos?|corp|ltd|plc|bancorp|dept|bhd|assn|univ|intl|sys|invt|elec|natl|mfg|mtg"
    "|tel|est|ext|sq|jr|sr|bros|blvd|rd|esq|etc|al|seq|vs|cf"
    "|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|mon|tue|tues|wed|thu|thurs|fri"
)
# Kept with their period only when a number follows ("no. 5", "fig. 3", "ca. 5").
_ABBREV_BEFORE_NUMBER = "ca|figs?|prop|nos?|art|bldg|pp|op"

_WORD = r"[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*"  # underscores join letters/digits; runs of them stand alone
_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        rf"(?i:(?:{_ABBREV}))\.",  # dr. etc. vs.
        rf"(?i:(?:{_ABBREV_BEFORE_NUMBER}))\.(?=\s+[0-9])",  # no. 5
        r"[A-Za-z](?:\.[A-Za-z])*\.",  # acronyms: e.g. i.e. p.m. a.
        r"[A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z][A-Za-z0-9]*)+",  # carina.there (missing space), a.b
        r"[0-9]+(?:[,:/][0-9]+)+",  # 1,000 3:45 10/12/2015 1/2
        r"[0-9]+(?:\.[0-9]+)?-[0-9]+",  # ranges 5-6, 1.5-2
        r"-?[0-9]*\.[0-9]+|-[0-9]+",  # 2.5 .5 -1.0 -5
        r"</?[A-Za-z!?][^<>\s]*>",  # SGML-like tags such as <Xray> stay whole
        rf"{_WORD}(?:['][A-Za-z]+)*(?:[-/]{_WORD}(?:['][A-Za-z]+)*)*",  # left-sided s/p 5mm x3 d'angelo a_name
        r"_+",  # de-identification blanks ___
        r"\.\.\.+|--+|``|''",
        r"\S",
    )
)

_CLITIC = re.compile(r"(?i)^(.+?)(n't|'s|'m|'d|'re|'ve|'ll)$")
_SPLIT_WORDS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"), "wanna": ("wan", "na")}


def _split_clitics(token: str) -> list[str]:
    """``can't`` -> ``ca n't``, ``patient's`` -> ``patient 's`` as the PTB conventions require."""
    lower = token.lower()
    if lower in _SPLIT_WORDS:
        return list(_SPLIT_WORDS[lower])
    match = _CLITIC.match(token)
    if match and "'" not in match.group(1):
        return [match.group(1), match.group(2)]
    return [token]


def _lex(text: str) -> list[str]:
    """Longest match at each position over `_PATTERNS` (first pattern wins ties), like a JFlex lexer."""
    tokens: list[str] = []
    pos, end = 0, len(text)
    while pos < end:
        if text[pos].isspace():
            pos += 1
            continue
        best = ""
        for pattern in _PATTERNS:
            match = pattern.match(text, pos)
            if match and len(match.group(0)) > len(best):
                best = match.group(0)
        pos += len(best)
        if best in _BRACKETS:
            tokens.append(_BRACKETS[best])
        elif best == '"':
            tokens.append("``" if not tokens or tokens[-1] in _BRACKETS.values() else "''")
        elif best[0].isalnum():
            tokens.extend(_split_clitics(best))
        else:
            tokens.append(best)
    return tokens


@functools.lru_cache(maxsize=1 << 17)
def _chunk_tokens(chunk: str, number_follows: bool) -> tuple[str, ...]:
    """Lower-cased tokens of one whitespace-free chunk, punctuation removed (memoised: reports repeat words).

    No PTB token spans whitespace; the one rule that looks past it ("no. 5" keeps its period before a
    number) gets `number_follows`.
    """
    if chunk.isalpha():
        words = _split_clitics(chunk) if chunk.lower() in _SPLIT_WORDS else [chunk]
    else:
        words = _lex(chunk + " 0")[:-1] if number_follows else _lex(chunk)
    return tuple(t for t in (w.lower() for w in words) if t not in PTB_PUNCTUATIONS)


def ptb_tokenize(text: str) -> str:
    """Tokenise one caption exactly as pycocoevalcap's PTBTokenizer + punctuation filter would.

    Returns the space-joined, lower-cased tokens (the form pycocoevalcap hands to its scorers);
    an empty or punctuation-only text gives ``""``.
    """
    chunks = text.translate(_UNICODE).split()
    tokens: list[str] = []
    for i, chunk in enumerate(chunks):
        number_follows = i + 1 < len(chunks) and chunks[i + 1][:1].isdigit()
        tokens.extend(_chunk_tokens(chunk, number_follows))
    return " ".join(tokens)


def ptb_tokenize_all(texts: Iterable[str]) -> list[str]:
    """`ptb_tokenize` over a corpus, order kept."""
    return [ptb_tokenize(t) for t in texts]
