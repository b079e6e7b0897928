"""Clinical efficacy: CheXpert-style labels of generated vs reference reports -> F1 and AUROC.

How labels become binary (the convention of report-generation papers scored with a CheXpert labeler):
- ``1.0`` (positive) -> 1; ``0.0`` (negative) -> 0; blank (``None``/nan, not mentioned) -> 0;
- ``-1.0`` (uncertain) -> ``uncertain_as`` (default 0, i.e. uncertain counts as negative; pass 1 for
  the "uncertain = positive" convention). The same mapping is applied to generated and reference labels.
- ``Consolidation-or-Pneumonia`` (paper category) is positive when either source label is.

How AUROC is obtained: the predicted *score* of a category is the generated report's binary label
(there are no probabilities in a text), so AUROC = (TPR + TNR) / 2 with ties counted half (Mann-Whitney).
Micro averages pool all (item, category) cells; macro is the mean over *defined* categories;
weighted weighs each defined category by its number of reference positives.

A category whose references hold no positive is undefined for F1 and AUROC (no negative: undefined for
AUROC): it is reported as nan, left out of macro/weighted averages, and named in one warning. It is never
counted as 0 (torchmetrics' macro average would).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from lit_medxchat.core.auroc import binary_auroc
from lit_medxchat.core.constants import CHEXPERT_LABELS, PAPER_CATEGORIES, PAPER_CATEGORY_SOURCES

Labels = Mapping[str, float | None]
Labeler = Callable[[str], Labels]


def default_labeler() -> Labeler:
    """The project's report labeler (`lit_medxchat.labeler.label_report`), imported when first needed."""
    try:
        from lit_medxchat.labeler import label_report
    except ImportError as err:
        raise ImportError(
            "clinical efficacy needs `lit_medxchat.labeler.label_report`; it could not be imported "
            f"({err}). Pass `labeler=` (a callable text -> {{label: 1.0/0.0/-1.0/None}}) or disable clinical metrics."
        ) from err
    return label_report


def binarise(value: float | None, uncertain_as: float = 0.0) -> float:
    """Map one CheXpert value (1.0/0.0/-1.0/None/nan) to 0/1 as documented in the module docstring."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0.0
    if value == 1.0:
        return 1.0
    if value == -1.0:
        return float(uncertain_as)
    if value == 0.0:
        return 0.0
    raise ValueError(f"label value {value!r} is not one of 1.0, 0.0, -1.0, None")


def label_matrix(labels: Sequence[Labels], categories: Sequence[str], uncertain_as: float = 0.0) -> np.ndarray:
    """(N, C) 0/1 matrix; a paper category maps through `PAPER_CATEGORY_SOURCES` (positive if any source is)."""
    out = np.zeros((len(labels), len(categories)), dtype=np.float64)
    for i, item in enumerate(labels):
        for j, cat in enumerate(categories):
            sources = PAPER_CATEGORY_SOURCES.get(cat, (cat,))
            out[i, j] = max(binarise(item.get(s), uncertain_as) for s in sources)
    return out


def _f1(tp: float, fp: float, fn: float) -> float:
    return 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else 0.0


def _averages(name: str, per_cat: dict[str, float], support: dict[str, int], micro: float) -> dict[str, float]:
    defined = {c: v for c, v in per_cat.items() if not math.isnan(v)}
    total = sum(support[c] for c in defined)
    return {
        f"{name}_micro": micro,
        f"{name}_macro": float(np.mean(list(defined.values()))) if defined else float("nan"),
        f"{name}_weighted": sum(v * support[c] for c, v in defined.items()) / total if total else float("nan"),
    }


def efficacy_scores(
    predicted: np.ndarray, reference: np.ndarray, categories: Sequence[str], warn_as: str = "clinical efficacy"
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """F1 and AUROC (micro/macro/weighted) of 0/1 matrices (N, C); also returns per-category values."""
    support = {c: int(reference[:, j].sum()) for j, c in enumerate(categories)}
    f1, auroc = {}, {}
    for j, cat in enumerate(categories):
        y, p = reference[:, j], predicted[:, j]
        tp, fp, fn = float((y * p).sum()), float(((1 - y) * p).sum()), float((y * (1 - p)).sum())
        f1[cat] = _f1(tp, fp, fn) if support[cat] > 0 else float("nan")
        auroc[cat] = binary_auroc(y, p)
    undefined = [c for c in categories if math.isnan(auroc[c]) or math.isnan(f1[c])]
    if undefined:
        warnings.warn(
            f"{warn_as}: {', '.join(undefined)} undefined on this set (no positive or no negative reference); "
            "reported as nan and left out of macro/weighted averages",
            RuntimeWarning,
            stacklevel=3,
        )
    y, p = reference.ravel(), predicted.ravel()
    micro_f1 = (
        _f1(float((y * p).sum()), float(((1 - y) * p).sum()), float((y * (1 - p)).sum())) if y.any() else float("nan")
    )
    scores = _averages("f1", f1, support, micro_f1)
    scores.update(_averages("auroc", auroc, support, binary_auroc(y, p)))
    return scores, {"f1": f1, "auroc": auroc}


def _slug(name: str) -> str:
    return name.lower().replace(" ", "_").replace("-", "_")


def clinical_efficacy(
    predicted_labels: Sequence[Labels], reference_labels: Sequence[Labels], uncertain_as: float = 0.0
) -> dict[str, float]:
    """All clinical-efficacy scalars, flat, for logging.

    Keys: ``ce_{f1,auroc}_{micro,macro,weighted}`` over the paper's six categories, ``ce14_...`` over
    the 14 CheXpert labels, and per paper category ``ce_f1/<category>``, ``ce_auroc/<category>``
    (nan where undefined).
    """
    if len(predicted_labels) != len(reference_labels):
        raise ValueError(f"{len(predicted_labels)} predicted label sets vs {len(reference_labels)} references")
    out: dict[str, float] = {}
    for prefix, categories in (("ce", PAPER_CATEGORIES), ("ce14", CHEXPERT_LABELS)):
        pred = label_matrix(predicted_labels, categories, uncertain_as)
        ref = label_matrix(reference_labels, categories, uncertain_as)
        scores, per_cat = efficacy_scores(pred, ref, categories, warn_as=f"clinical efficacy ({prefix})")
        out.update({f"{prefix}_{k}": v for k, v in scores.items()})
        if prefix == "ce":
            for metric, values in per_cat.items():
                out.update({f"ce_{metric}/{_slug(c)}": v for c, v in values.items()})
    return out
