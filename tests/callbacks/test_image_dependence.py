"""The adapter-collapse signal: a constant adapter scores ~0, one that follows its input clearly more."""

from __future__ import annotations

import pytest
import torch

from callbacks.scoring.image_dependence import adapter_sensitivity


def test_constant_outputs_score_zero() -> None:
    prefix = torch.randn(1, 8, 16).expand(6, -1, -1)
    assert adapter_sensitivity(prefix) == 0.0


def test_a_nearly_constant_prefix_scores_near_zero() -> None:
    torch.manual_seed(0)
    outputs = torch.randn(1, 8, 16) * 1.5 + 0.01 * torch.randn(6, 8, 16)  # the collapse seen in the demo (~1%)
    assert adapter_sensitivity(outputs) < 0.02


def test_image_dependent_outputs_score_high() -> None:
    torch.manual_seed(0)
    adapter = torch.nn.Linear(32, 16)
    features = torch.randn(6, 8, 32)  # different images
    assert adapter_sensitivity(adapter(features)) > 0.8


def test_needs_two_images() -> None:
    with pytest.raises(ValueError, match="N >= 2"):
        adapter_sensitivity(torch.randn(1, 8, 16))
