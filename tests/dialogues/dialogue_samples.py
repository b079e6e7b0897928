"""Samples shaped like the shard writer's: sections, CheXpert labels, view and training report."""

from __future__ import annotations

from lit_medxchat.core.constants import CHEXPERT_LABELS, VIEW_SENTENCES


def make_sample(key: str, findings: str | None, impression: str | None, view: str = "PA", **labels) -> dict:
    """Keyword labels use underscores for spaces (Pleural_Effusion=1.0); the rest are None."""
    values = dict.fromkeys(CHEXPERT_LABELS)
    for name, value in labels.items():
        name = name.replace("_", " ")
        assert name in values, name
        values[name] = value
    parts = [VIEW_SENTENCES[view]]
    if findings:
        parts.append(f"findings: {findings}")
    if impression:
        parts.append(f"impression: {impression}")
    return {
        "key": key,
        "sections": {"findings": findings, "impression": impression, "last_paragraph": None, "comparison": None},
        "labels": values,
        "view": view,
        "report_text": " ".join(parts),
    }
