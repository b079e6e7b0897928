"""`DialogueBuilder`: one sample's instruction dialogues (`<key>.conv.json`, data contract §2).

Deterministic for (seed, key): every random choice comes from a generator seeded with both, so
reruns and parallel workers write identical shards. With `llm_endpoint`, the text-to-CXR
dialogues come from the chat API (paper §3.1) and fall back to the rules on any failure; the
report and VQA dialogues always come from the rules, whose answers are read from the labels.
"""

from __future__ import annotations

import logging
import random
from collections import Counter

from lit_medxchat.core.constants import CHEXPERT_LABELS, VIEW_CLASSES
from lit_medxchat.dialogues import rules
from lit_medxchat.dialogues.client import ChatClient, ChatRequestError
from lit_medxchat.dialogues.findings import read_report
from lit_medxchat.dialogues.prompt import SYSTEM_MESSAGE, build_prompt
from lit_medxchat.dialogues.reply import MalformedReply, parse_reply

log = logging.getLogger(__name__)

# Every counter `.stats` reports, present from the start so that zero counts show up too.
STAT_KEYS: tuple[str, ...] = (
    "samples",
    "dialogues_report",
    "dialogues_vqa",
    "dialogues_t2i",
    "report_empty",
    "vqa_yes",
    "vqa_no",
    "vqa_location",
    "vqa_sst",
    "vqa_uncertain_skipped",
    "t2i_skipped_no_sentence",
    "llm_requests",
    "llm_ok",
    "llm_http_error",
    "llm_network_error",
    "llm_malformed",
    "llm_fallback",
)


class DialogueBuilder:
    """Builds the report, VQA and text-to-CXR dialogues of one sample at a time.

    Args:
        seed: mixed with each sample's key; the same (seed, key) gives the same dialogues.
        llm_endpoint: base URL of an OpenAI-compatible API (".../v1"); None uses the rules only.
        llm_model: model name sent to the API.
        timeout_s: seconds to wait for one API reply before falling back to the rules.
        max_retries: retries of a rate-limited or briefly unavailable API (HTTP 429/502/503/504).
    """

    def __init__(
        self,
        seed: int = 0,
        llm_endpoint: str | None = None,
        llm_model: str = "gpt-4o",
        timeout_s: float = 60.0,
        max_retries: int = 2,
    ) -> None:
        self.seed = seed
        self.client = ChatClient(llm_endpoint, llm_model, timeout_s, max_retries=max_retries) if llm_endpoint else None
        self._stats: Counter[str] = Counter(dict.fromkeys(STAT_KEYS, 0))
        self._warned = False

    @property
    def stats(self) -> dict[str, int]:
        """Counts over every `build` call so far (dialogues per task, VQA balance, LLM outcomes)."""
        return dict(self._stats)

    def build(self, *, key: str, sections: dict, labels: dict, view: str, report_text: str) -> list[dict]:
        """The sample's dialogues: report (if the report has text), VQA, text-to-CXR (if the report
        has a sentence to draw from).

        `labels` maps CheXpert names to 1.0/0.0/-1.0/None (missing names count as None);
        `view` is one of `VIEW_CLASSES`; `report_text` is the view-augmented training report.
        """
        self._check(key, labels, view)
        rng = random.Random(f"{self.seed}:{key}")
        stats = self._stats
        stats["samples"] += 1
        report_text = report_text or ""
        facts = read_report(sections or {}, report_text)
        dialogues: list[dict] = []
        if report_text.strip():
            dialogues.append(rules.report_dialogue(rng, report_text))
        else:
            stats["report_empty"] += 1
        dialogues += rules.vqa_dialogues(rng, labels, facts, stats)
        t2i = self._llm_t2i(key, report_text, view) if self.client and report_text.strip() else None
        if t2i is None:
            rule_t2i = rules.t2i_dialogue(rng, labels, facts, view, stats)
            t2i = [rule_t2i] if rule_t2i else []
        dialogues += t2i
        for dialogue in dialogues:
            stats[f"dialogues_{dialogue['task']}"] += 1
        return dialogues

    def _check(self, key: str, labels: dict, view: str) -> None:
        if view not in VIEW_CLASSES:
            raise ValueError(
                f"sample {key}: view {view!r} is not one of {VIEW_CLASSES}; map it with constants.view_class"
            )
        unknown = set(labels) - set(CHEXPERT_LABELS)
        if unknown:
            raise ValueError(f"sample {key}: unknown label names {sorted(unknown)}; use constants.CHEXPERT_LABELS")
        bad = {name: v for name, v in labels.items() if v not in (1.0, 0.0, -1.0, None)}
        if bad:
            raise ValueError(f"sample {key}: label values {bad} are not 1.0/0.0/-1.0/None")

    def _llm_t2i(self, key: str, report_text: str, view: str) -> list[dict] | None:
        """Text-to-CXR dialogues from the API, or None (counted, warned once) to use the rules.

        The LLM path draws from its own generator so that the rule dialogues of a sample are the
        same with and without an endpoint.
        """
        assert self.client is not None
        llm_rng = random.Random(f"{self.seed}:{key}:llm")
        asked = rules.asked_view(llm_rng, view)
        messages = [
            {"role": "system", "content": SYSTEM_MESSAGE},
            {"role": "user", "content": build_prompt(report_text, asked, llm_rng)},
        ]
        self._stats["llm_requests"] += 1
        try:
            reply = self.client.complete(messages, seed=llm_rng.randrange(2**31))
            dialogues = parse_reply(reply)
        except ChatRequestError as error:
            counter = "llm_malformed" if error.kind == "format" else f"llm_{error.kind}_error"
            return self._fallback(key, counter, str(error))
        except MalformedReply as error:
            return self._fallback(key, "llm_malformed", str(error))
        self._stats["llm_ok"] += 1
        return dialogues

    def _fallback(self, key: str, counter: str, reason: str) -> None:
        self._stats[counter] += 1
        self._stats["llm_fallback"] += 1
        if not self._warned:
            self._warned = True
            log.warning(
                "sample %s: LLM dialogues unusable (%s); using rule dialogues. Further failures are only "
                "counted in DialogueBuilder.stats (llm_* keys).",
                key,
                reason,
            )
        return None
