"""The page's three task buttons as requests in the training dialogues' own phrasings.

A model trained on the rule-built dialogues answers best when asked the way it was taught, so the
buttons fill the message box from the same templates (`lit_medxchat.dialogues.templates`); the
user can still edit the request before sending it.
"""

from __future__ import annotations

from lit_medxchat.dialogues import templates as T

NO_FINDING = "No Finding"
FINDING_CHOICES: tuple[str, ...] = (NO_FINDING, *T.FINDING_NAMES)  # CheXpert labels, for the finding menu
VIEW_CHOICES: tuple[str, ...] = tuple(T.VIEW_PHRASES)  # PA, AP, LATERAL


def _check(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def _with_article(label: str) -> str:
    name, article = T.FINDING_NAMES[label]
    return f"{article} {name}" if article else name


def report_request() -> str:
    """Ask for the report of the uploaded CXR(s)."""
    return T.REPORT_INSTRUCTIONS[1]


def question_request(label: str) -> str:
    """Ask whether a finding (a CheXpert label) is present; "No Finding" asks whether the study is normal."""
    _check(label, FINDING_CHOICES, "finding")
    if label == NO_FINDING:
        return T.NORMAL_QUESTIONS[0]
    return T.PRESENCE_QUESTIONS[1].format(a_name=_with_article(label), name=T.FINDING_NAMES[label][0])


def draw_request(view: str, label: str) -> str:
    """Ask for a CXR in `view` (PA, AP or LATERAL) showing a finding, or a normal chest for "No Finding"."""
    _check(view, VIEW_CHOICES, "view")
    _check(label, FINDING_CHOICES, "finding")
    phrase = T.VIEW_PHRASES[view][0]
    a_view = ("an " if phrase[0] in "aeiouAEIOU" else "a ") + phrase
    if label == NO_FINDING:
        return T.T2I_NORMAL_REQUESTS[2].format(a_view=a_view, view=phrase)
    return T.T2I_REQUESTS[2].format(view=phrase, np=_with_article(label), a_view=a_view)
