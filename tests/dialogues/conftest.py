"""Fixtures: one abnormal and one normal sample (see dialogue_samples.make_sample)."""

from __future__ import annotations

import pytest
from dialogue_samples import make_sample


@pytest.fixture
def abnormal_sample() -> dict:
    return make_sample(
        "d-abnormal",
        "Small right pleural effusion. There is right lower lobe consolidation. No pneumothorax. Heart size is normal.",
        "Right lower lobe consolidation consistent with pneumonia. Small right pleural effusion.",
        Pleural_Effusion=1.0,
        Consolidation=1.0,
        Pneumonia=1.0,
        Pneumothorax=0.0,
        Cardiomegaly=0.0,
    )


@pytest.fixture
def normal_sample() -> dict:
    return make_sample(
        "d-normal",
        "The lungs are clear. No pleural effusion or pneumothorax. Heart size is normal.",
        "No acute cardiopulmonary process.",
        view="LATERAL",
        No_Finding=1.0,
        Pleural_Effusion=0.0,
        Pneumothorax=0.0,
        Cardiomegaly=0.0,
    )
