"""Area under the ROC curve, once for the whole project.

The findings classifier's epoch metric, the FID callback's judge, the demo's per-finding table and
the clinical scores all need the same number, and it must be the Mann-Whitney statistic with average
ranks for ties (what scikit-learn and torchmetrics report), so it lives here in NumPy, free of torch
and Lightning.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def binary_auroc(y_true: np.ndarray | Sequence[bool], scores: np.ndarray | Sequence[float]) -> float:
    """AUROC by the Mann-Whitney statistic with average ranks for ties; nan without both classes."""
    y_true = np.asarray(y_true, dtype=bool)
    n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = np.asarray(scores)[order]
    ranks = np.empty(len(sorted_scores), dtype=np.float64)
    # average rank (1-based) within each run of equal scores
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, count in zip(first, counts, strict=True):
        ranks[order[start : start + count]] = start + (count + 1) / 2.0
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def per_label_auroc(targets: np.ndarray, scores: np.ndarray) -> list[float]:
    """AUROC of every column of (N, L) `targets` (1 positive, 0 negative, -1 ignored); nan where undefined."""
    targets, scores = np.asarray(targets), np.asarray(scores, dtype=np.float64)
    if targets.shape != scores.shape or targets.ndim != 2:
        raise ValueError(f"targets {targets.shape} and scores {scores.shape}: give two (N, L) arrays of one shape")
    values = []
    for j in range(targets.shape[1]):
        keep = targets[:, j] >= 0
        values.append(binary_auroc(targets[keep, j] == 1, scores[keep, j]))
    return values


def macro_auroc(targets: np.ndarray, scores: np.ndarray) -> float:
    """Mean AUROC over the labels that have both classes among kept entries; nan if none has."""
    defined = [value for value in per_label_auroc(targets, scores) if not np.isnan(value)]
    return float(np.mean(defined)) if defined else float("nan")
