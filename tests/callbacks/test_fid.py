"""FID: equals the sqrtm definition, both routes agree, Inception from a local TorchScript file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from callbacks.scoring.fid import (
    InceptionFeatures,
    extractor_name,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    resize_antialiased,
)


def _reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import linalg

    m1, s1, m2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fid_equals_sqrtm_definition_on_both_routes():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 32))
    b = rng.standard_normal((300, 32)) @ rng.standard_normal((32, 32)) * 0.4 + 0.2
    expected = _reference_fid(a, b)
    assert fid_from_features(a, b) == pytest.approx(expected, rel=1e-8)  # covariance route (N > D)
    assert frechet_distance(*feature_statistics(a), *feature_statistics(b)) == pytest.approx(expected, rel=1e-8)
    small_a, small_b = a[:20], b[:25]  # Gram route (N < D): same value as the covariance route
    assert fid_from_features(small_a, small_b) == pytest.approx(
        frechet_distance(*feature_statistics(small_a), *feature_statistics(small_b)), rel=1e-7
    )
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-8)


def test_fid_rejects_bad_shapes():
    with pytest.raises(ValueError, match="N >= 2"):
        fid_from_features(np.zeros((1, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="feature sizes differ"):
        fid_from_features(np.zeros((3, 4)), np.zeros((3, 5)))


def test_antialiased_resize_keeps_mean_of_fine_pattern():
    checker = (torch.arange(64).view(1, 1, 1, 64) + torch.arange(64).view(1, 1, 64, 1)) % 2
    out = resize_antialiased(checker.float(), 8)
    assert out.shape == (1, 3, 8, 8)
    assert torch.allclose(out, torch.full_like(out, 0.5), atol=0.02)  # aliasing would give 0s and 1s


class _TinyInception(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert return_features
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


def test_inception_features_from_local_torchscript(tmp_path):
    path = tmp_path / "inception.pt"
    torch.jit.script(_TinyInception()).save(str(path))
    extractor = InceptionFeatures(path)
    feats = extractor.features(torch.full((2, 1, 64, 64), 0.5))
    assert feats.shape == (2, 6) and torch.allclose(feats, torch.full((2, 6), 127.5))
    assert extractor_name(extractor) == "inception"
    with pytest.raises(FileNotFoundError, match="inception_weights"):
        InceptionFeatures(tmp_path / "missing.pt")


def test_project_findings_classifier_names_its_fid_key():
    from lit_medxchat.models.classifiers import FindingsClassifier

    tiny = {"embedding_size": 8, "hidden_sizes": [8, 8, 8, 8], "depths": [1, 1, 1, 1], "num_channels": 3}
    classifier = FindingsClassifier(config=tiny, image_size=32)
    assert extractor_name(classifier) == "findings-resnet"
    from callbacks.scoring.fid import extract_features

    feats = extract_features(classifier, torch.rand(3, 1, 48, 48))
    assert feats.shape == (3, classifier.num_features)
