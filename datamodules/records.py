"""`CXRRecord`: one image with everything a shard sample needs except its pixels.

Every source adapter (`datamodules.sources.*`) turns its own layout into these records; the
prepare pipeline decodes the image, builds the training text and dialogues, and hands the
members to `ShardWriter`. Records are frozen so that a record's fingerprint (used to decide
whether a finished shard can be reused after a restart) cannot change after planning.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lit_medxchat.core.constants import CHEXPERT_LABELS, VIEW_CLASSES, VIEW_SENTENCES

SECTION_NAMES: tuple[str, ...] = ("findings", "impression", "last_paragraph", "comparison")
SPLITS: tuple[str, ...] = ("train", "validate", "test")


@dataclass(frozen=True)
class SkippedItem:
    """A source item that did not become a sample, and why.

    `item` is a path relative to the source root (an image, a report, an XML file) or
    `"<csv name>:row N"`; `reason` is a short slug counted in `skipped_by_reason`.
    """

    item: str
    reason: str
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return {"item": self.item, "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True)
class CXRRecord:
    """One image of one study, ready to be decoded and written as a sample.

    `labels` holds all 14 `CHEXPERT_LABELS` (1.0 / 0.0 / -1.0 / None for blank); `sections`
    holds the four `SECTION_NAMES` (None when absent); `study_images` lists `(dicom_id, view)`
    for every planned image of the study, this one included, sorted by id.
    `image_path` is absolute; `image_item` is the same image relative to the source root
    (what skipped lists and error messages show).
    """

    dicom_id: str
    study_id: str
    subject_id: str
    split: str
    view: str
    view_position: str
    image_path: str
    image_item: str
    sections: Mapping[str, str | None]
    labels: Mapping[str, float | None]
    source: str
    study_images: tuple[tuple[str, str], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.view not in VIEW_CLASSES:
            raise ValueError(f"record {self.dicom_id}: view {self.view!r} is not one of {VIEW_CLASSES}")
        if self.split not in SPLITS:
            raise ValueError(f"record {self.dicom_id}: split {self.split!r} is not one of {SPLITS}")
        if set(self.labels) != set(CHEXPERT_LABELS):
            raise ValueError(f"record {self.dicom_id}: labels must name exactly the 14 CHEXPERT_LABELS")
        if "." in self.dicom_id or "/" in self.dicom_id:
            raise ValueError(f"record {self.dicom_id!r}: a WebDataset key may hold no '.' or '/'")

    @property
    def key(self) -> str:
        """The WebDataset sample key (`<key>.jpg`, `<key>.json`, ...)."""
        return self.dicom_id

    def training_text(self) -> str:
        """`"<view sentence> findings: ... impression: ..."` (paper §3.1); missing sections left out.

        When a report has neither findings nor impression, the official sectioning's fallback
        (last paragraph, else comparison) stands in for the impression, as it does for CheXpert.
        """
        parts = [VIEW_SENTENCES[self.view]]
        findings = self.sections.get("findings")
        impression = self.sections.get("impression")
        if impression is None and findings is None:
            impression = self.sections.get("last_paragraph") or self.sections.get("comparison")
        if findings:
            parts.append(f"findings: {findings}")
        if impression:
            parts.append(f"impression: {impression}")
        return " ".join(parts)

    def meta_json(self, original_size: tuple[int, int]) -> dict[str, Any]:
        """The `<key>.json` member (docs/data-contracts.md §2); `original_size` is (width, height)."""
        meta: dict[str, Any] = {
            "dicom_id": self.dicom_id,
            "study_id": self.study_id,
            "subject_id": self.subject_id,
            "split": self.split,
            "view": self.view,
            "view_position": self.view_position,
            "labels": {name: self.labels[name] for name in CHEXPERT_LABELS},
            "sections": {name: self.sections.get(name) for name in SECTION_NAMES},
            "original_size": [int(original_size[0]), int(original_size[1])],
            "source": self.source,
            "study_images": [{"dicom_id": d, "view": v} for d, v in self.study_images],
        }
        meta.update(self.extra)
        return meta

    def fingerprint(self) -> str:
        """sha256 of everything that shapes this record's sample except the pixels."""
        payload = self.meta_json((0, 0))
        payload["image_item"] = self.image_item
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass
class SourceScan:
    """What a source adapter found: records to write, items it skipped, conversions it made.

    `skipped` and `converted` are keyed by split; items whose split cannot be known (an image
    absent from every CSV) are listed under `"train"` with that fact in their detail.
    `info` goes into the manifest's `source` field (kind, paths, counts of what was read).
    """

    records: list[CXRRecord]
    skipped: dict[str, list[SkippedItem]]
    converted: dict[str, dict[str, int]]
    info: dict[str, Any]

    def skip(self, split: str | None, item: str, reason: str, detail: str = "") -> None:
        if split is None:
            split, detail = "train", (detail + "; " if detail else "") + "split unknown, listed under train"
        self.skipped.setdefault(split, []).append(SkippedItem(item, reason, detail))

    def convert(self, split: str, reason: str) -> None:
        counts = self.converted.setdefault(split, {})
        counts[reason] = counts.get(reason, 0) + 1
