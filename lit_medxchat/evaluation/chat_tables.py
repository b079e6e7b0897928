"""The paper's chat tables from a run's held-out answers: Table 1 (clinical efficacy), Table 2 (NLG), Tables 3-4
(VQA by topic and by diagnosis) and the `<Xray>` request rule, each beside its baselines and with its n.

Pure computation over the items the metric callbacks collected (`prediction`, `reference`, `meta`), so the
figures are the callbacks' own functions applied to every held-out sample; `cli.py` runs the model.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lit_medxchat.core.constants import VIEW_SENTENCES

Labeler = Callable[[str], dict[str, Any]]
_VIEW_SENTENCE = re.compile("|".join(re.escape(s) for s in VIEW_SENTENCES.values()), re.IGNORECASE)


@dataclass
class Table:
    """One table: its rows (a `model` name and metric values), what it is computed on, and how."""

    name: str
    title: str
    rows: list[dict[str, Any]]
    notes: dict[str, Any] = field(default_factory=dict)


def without_view_sentence(text: str) -> str:
    """`text` without its view sentence ("PA view of the chest was obtained."): MIMIC-CXR reports have none, and
    it is trivially predicted from the image, so NLG scores with it are higher than the paper's Table 2 allows."""
    return " ".join(_VIEW_SENTENCE.sub(" ", text).split())


def clinical_table(rows: dict[str, Sequence[str]], references: Sequence[str], labeler: Labeler,
                   uncertain_as: float, labeler_name: str) -> Table:
    """Table 1: CE F1 and AUROC (micro, macro, weighted; per paper category) and the 14-label variant.

    `rows`: model name -> one generated report per reference (every held-out image asked for its report).
    """
    from callbacks.scoring.clinical import clinical_efficacy

    reference_labels = [labeler(text) for text in references]
    out = []
    for model, predictions in rows.items():
        scores = clinical_efficacy([labeler(text) for text in predictions], reference_labels, uncertain_as)
        out.append({"model": model, **scores})
    return Table("table1_clinical_efficacy", "Table 1: clinical efficacy of generated reports", out, {
        "n": len(references), "labeler": labeler_name, "uncertain_as": uncertain_as,
        "averaging": "micro, macro and support-weighted over the paper's 6 categories (ce_), and over the 14 "
                     "CheXpert labels (ce14_); a category without positives is left out of macro (nan)",
        "auroc": "from the generated report's binary labels (one operating point)",
    })


def nlg_table(rows: dict[str, Sequence[str]], references: Sequence[str], meteor: Any) -> Table:
    """Table 2: BLEU-1..4, METEOR, ROUGE-L, CIDEr, on references with and without the view sentence."""
    from callbacks.scoring.nlg import report_nlg_scores

    out = []
    for model, predictions in rows.items():
        for variant, strip in (("without view sentence (paper-comparable)", True), ("with view sentence", False)):
            hyps = [without_view_sentence(p) for p in predictions] if strip else list(predictions)
            refs = [without_view_sentence(r) for r in references] if strip else list(references)
            out.append({"model": model, "references": variant, **report_nlg_scores(hyps, refs, meteor=meteor)})
    return Table("table2_nlg", "Table 2: NLG metrics of generated reports", out, {
        "n": len(references), "tokenisation": "PTB, as pycocoevalcap",
        "view sentence": "removed from predictions and references in the paper-comparable rows",
    })


def vqa_tables(rows: dict[str, dict[str, Any]], protocol_items: dict[str, int], per_category: int,
               random_draw_n: int) -> tuple[Table, Table]:
    """Tables 3 and 4: VQA accuracy by topic and by diagnostic category (`vqa_accuracy`'s keys per model).

    Rows named "..., random draw" score one question drawn at random per image; the others the protocol's."""
    by_topic, by_diagnosis = [], []
    for model, scores in rows.items():
        topic = {"model": model, "overall": scores.get("vqa_acc"), "n": scores.get("vqa_n"),
                 "presence_yes_no_rate": scores.get("presence_yes_no_rate")}
        diagnosis = {"model": model}
        for key, value in scores.items():
            measure, _, group = key.partition("/")
            if not group or measure not in ("vqa_acc", "vqa_n", "presence_vqa_acc", "presence_vqa_n"):
                continue
            suffix = ("" if measure.endswith("vqa_acc") else " n") + \
                (" (presence)" if measure.startswith("presence_") else "")
            if group.startswith("diagnosis/"):
                diagnosis[group.removeprefix("diagnosis/") + suffix] = value
            else:
                topic[group + suffix] = value
        by_topic.append(topic)
        by_diagnosis.append(diagnosis)
    notes = {"n": sum(protocol_items.values()), "items": protocol_items,
             "protocol": f"ELIXR's, as the paper: per diagnostic category {per_category} images with the finding and "
                         f"as many without it asked its presence (balanced: chance 0.5), and up to {per_category} "
                         "asked its location and its size/severity/type, each question with its dialogue's earlier "
                         "turns as history (lit_medxchat.evaluation.vqa_protocol)",
             "random draw": f"rows marked 'random draw': every held-out image asked the last question of one dialogue "
                            f"drawn at random (n={random_draw_n}); most presence items there are 'no'",
             "presence_yes_no_rate": "share of presence answers that open with a yes or no the scorer reads",
             "matching": "callbacks.scoring.vqa.vqa_accuracy"}
    return (Table("table3_vqa_by_topic", "Table 3: VQA accuracy by question topic", by_topic, notes),
            Table("table4_vqa_by_diagnosis", "Table 4: VQA accuracy by diagnostic category", by_diagnosis, notes))


def request_table(rows: dict[str, dict[str, float]], stray_tags: dict[str, int]) -> Table:
    """The `<Xray>` request rule per model, and the report / VQA answers that hold a stray `<Xray>` tag."""
    out = [{"model": model, **rates, "report_and_vqa_answers_with_xray_tags": stray_tags.get(model)}
           for model, rates in rows.items()]
    return Table("xray_requests", "Text-to-CXR requests: the <Xray> prompt names the requested view and findings",
                 out, {"rule": "callbacks.scoring.text_to_cxr.xray_request_rate"})


def most_frequent(texts: Counter) -> str:
    """The most frequent text of a counter (ties: the first seen), for the most-frequent-report baseline."""
    if not texts:
        raise ValueError("no training reports to take the most frequent from")
    return texts.most_common(1)[0][0]


def study_rows(items: Sequence[dict]) -> list[dict[str, str]]:
    """One (study id, generated report, reference) per study, from a frontal image where the study has one, as
    ReXrank scores single-image models; items without a study id are keyed by their sample key."""
    chosen: dict[str, dict] = {}
    for item in items:
        study = str(item.get("study_id") or item.get("key"))
        frontal = item.get("view") in ("PA", "AP")
        if study not in chosen or (frontal and chosen[study].get("view") not in ("PA", "AP")):
            chosen[study] = item
    return [{"study_id": study, "report": item["prediction"], "reference": item["reference"]}
            for study, item in sorted(chosen.items())]
