"""Names shared by every stage: CheXpert labels, the paper's six categories, views, special tokens.

These are the data contracts between the shard writer, the DataModules, the models and the
metric callbacks; change them here only.
"""

from __future__ import annotations

# The 14 CheXpert labels in the column order of `mimic-cxr-2.0.0-chexpert.csv.gz` (alphabetical).
# Readers must still select CSV columns by name: the PhysioNet page lists another order.
CHEXPERT_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)

# The paper's six clinical-efficacy / VQA categories (Tables 1 and 4). "Consolidation-or-Pneumonia"
# is the union of the two CheXpert labels; the mapping lives in `PAPER_CATEGORY_SOURCES`.
PAPER_CATEGORIES: tuple[str, ...] = (
    "No Finding",
    "Pneumothorax",
    "Edema",
    "Pleural Effusion",
    "Consolidation-or-Pneumonia",
    "Lung Lesion",
)
PAPER_CATEGORY_SOURCES: dict[str, tuple[str, ...]] = {
    "No Finding": ("No Finding",),
    "Pneumothorax": ("Pneumothorax",),
    "Edema": ("Edema",),
    "Pleural Effusion": ("Pleural Effusion",),
    "Consolidation-or-Pneumonia": ("Consolidation", "Pneumonia"),
    "Lung Lesion": ("Lung Lesion",),
}

# View classes of the view classifier, in logit order. `OTHER` covers oblique/decubitus views
# and images whose ViewPosition is missing and cannot be inferred.
VIEW_CLASSES: tuple[str, ...] = ("PA", "AP", "LATERAL", "OTHER")

# MIMIC `ViewPosition` values mapped to our classes (MIT-LCP statistics notebook's grouping).
VIEW_POSITION_TO_CLASS: dict[str, str] = {
    "PA": "PA",
    "AP": "AP",
    "LATERAL": "LATERAL",
    "LL": "LATERAL",
    "XTABLE LATERAL": "LATERAL",
}

# The sentence prepended to every training report (paper §3.1), keyed by view class.
VIEW_SENTENCES: dict[str, str] = {
    "PA": "PA view of the chest was obtained.",
    "AP": "AP view of the chest was obtained.",
    "LATERAL": "Lateral view of the chest was obtained.",
    "OTHER": "A view of the chest was obtained.",
}

VQA_TOPICS: tuple[str, ...] = ("presence", "location", "sst")
CHAT_TASKS: tuple[str, ...] = ("report", "vqa", "t2i")

IMAGE_TOKEN = "<image>"
XRAY_START = "<Xray>"
XRAY_END = "</Xray>"
SPECIAL_TOKENS: tuple[str, ...] = (IMAGE_TOKEN, XRAY_START, XRAY_END)


def view_class(view_position: str | None) -> str:
    """Map a raw MIMIC `ViewPosition` (possibly empty) to one of `VIEW_CLASSES`."""
    if not view_position:
        return "OTHER"
    return VIEW_POSITION_TO_CLASS.get(view_position.strip().upper(), "OTHER")
