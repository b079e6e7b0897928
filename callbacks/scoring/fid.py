"""Frechet distance between feature distributions, feature extractors and generated-image judges.

FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)). The trace of the matrix square root is
computed from eigenvalues: with S1 = V diag(l) V^T (symmetric, eigh), sqrt(S1) S2 sqrt(S1) is symmetric
PSD and has the same eigenvalues as S1 S2, so tr((S1 S2)^(1/2)) = sum sqrt(eig(sqrt(S1) S2 sqrt(S1))).
Two symmetric eigendecompositions of a 2048x2048 matrix take seconds; `scipy.linalg.sqrtm` takes
minutes. All statistics are in float64; tiny negative eigenvalues (round-off) are clipped to 0.

Feature extractors (the name goes into the metric key, e.g. ``fid_inception``):
- `InceptionFeatures`: the TorchScript Inception-v3 of the FID reference
  (``inception-2015-12-05.pt``, as used by StyleGAN3 / clean-fid) from a local file, no torch-fidelity;
- any classifier with ``features(images01) -> (B, D)`` (the project's findings classifier).
Images are resized with antialiasing (bilinear, ``antialias=True``) to the extractor's input size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _as_float64(features: torch.Tensor | np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(features).detach().cpu().to(torch.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"FID needs (N >= 2, D) features, got shape {tuple(x.shape)}; validate on more images")
    return x


def feature_statistics(features: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D), float64, of (N, D) features with N >= 2."""
    x = _as_float64(features)
    mu = x.mean(dim=0)
    centred = x - mu
    return mu, centred.T @ centred / (x.shape[0] - 1)


def frechet_distance(
    mu1: torch.Tensor | np.ndarray,
    sigma1: torch.Tensor | np.ndarray,
    mu2: torch.Tensor | np.ndarray,
    sigma2: torch.Tensor | np.ndarray,
) -> float:
    """Frechet distance of two Gaussians; the trace of the matrix square root by eigendecomposition."""
    mu1, mu2, sigma1, sigma2 = (torch.as_tensor(t, dtype=torch.float64) for t in (mu1, mu2, sigma1, sigma2))
    evals1, evecs1 = torch.linalg.eigh(sigma1)
    sqrt1 = (evecs1 * evals1.clamp(min=0).sqrt()) @ evecs1.T
    middle = sqrt1 @ sigma2 @ sqrt1
    tr_covmean = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + sigma1.trace() + sigma2.trace() - 2 * tr_covmean)


def fid_from_features(real: torch.Tensor | np.ndarray, generated: torch.Tensor | np.ndarray) -> float:
    """FID between two (N, D) feature sets (N may differ), exact, in float64.

    With fewer samples than dimensions (the usual validation set), the covariances have rank < D and
    tr((S1 S2)^(1/2)) equals the sum of the square roots of the eigenvalues of the small Gram matrix
    (A B^T)(A B^T)^T / ((n1-1)(n2-1)) (A, B the centred features): one n x n eigendecomposition instead
    of two D x D ones. Otherwise the covariance route of `frechet_distance` is used.
    """
    a, b = _as_float64(real), _as_float64(generated)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: real {tuple(a.shape)} vs generated {tuple(b.shape)}")
    if min(a.shape[0], b.shape[0]) >= a.shape[1]:
        return frechet_distance(*feature_statistics(a), *feature_statistics(b))
    mu_a, mu_b = a.mean(0), b.mean(0)
    a, b = a - mu_a, b - mu_b
    n_a, n_b = a.shape[0] - 1, b.shape[0] - 1
    cross = a @ b.T  # (n1, n2)
    gram = cross @ cross.T if cross.shape[0] <= cross.shape[1] else cross.T @ cross
    tr_covmean = torch.linalg.eigvalsh((gram + gram.T) / 2).clamp(min=0).sqrt().sum() / (n_a * n_b) ** 0.5
    diff = mu_a - mu_b
    tr_a, tr_b = (a * a).sum() / n_a, (b * b).sum() / n_b
    return float(diff @ diff + tr_a + tr_b - 2 * tr_covmean)


def resize_antialiased(images01: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, 3, size, size) with antialiased bilinear resizing; grey is replicated to 3 channels."""
    if images01.ndim != 4:
        raise ValueError(f"expected images (B, C, H, W), got shape {tuple(images01.shape)}")
    if images01.shape[1] == 1:
        images01 = images01.expand(-1, 3, -1, -1)
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images01.shape[-2:]) == size:
        return images01
    return F.interpolate(images01.float(), size=size, mode="bilinear", antialias=True, align_corners=False)


class InceptionFeatures(nn.Module):
    """2048-d pool features of the FID Inception-v3 loaded from a local TorchScript file.

    The file is NVIDIA's ``inception-2015-12-05.pt`` (TF-Inception weights traced to TorchScript); it takes
    float images in [0, 255] at 299x299 and returns features with ``return_features=True``. Nothing is
    downloaded: pass the path of a copy you fetched once.
    """

    name = "inception"
    num_features = 2048
    image_size = 299

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"Inception weights {path} not found; download inception-2015-12-05.pt once (StyleGAN3/clean-fid "
                "release) and pass its local path, or leave inception_weights unset to use the findings classifier"
            )
        self.model = torch.jit.load(str(path), map_location="cpu").eval()

    @torch.no_grad()
    def features(self, images01: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> (B, 2048)."""
        x = resize_antialiased(images01, self.image_size).clamp(0, 1) * 255.0
        return self.model(x, return_features=True).reshape(x.shape[0], -1)


def extractor_name(extractor: nn.Module) -> str:
    """Name of a feature extractor for metric keys: its ``name`` attribute, else ``findings-<model_type>``
    from the Hugging Face config of the extractor or of its ``.model`` (e.g. ``findings-resnet``)."""
    name = getattr(extractor, "name", None)
    if isinstance(name, str) and name:
        return name
    for holder in (extractor, getattr(extractor, "model", None)):
        model_type = getattr(getattr(holder, "config", None), "model_type", None)
        if isinstance(model_type, str) and model_type:
            return f"findings-{model_type}"
    return f"findings-{type(extractor).__name__.lower()}"


@torch.no_grad()
def extract_features(extractor: nn.Module, images01: torch.Tensor) -> torch.Tensor:
    """Features of images in [0, 1], resized (antialiased) to ``extractor.image_size`` when it declares one."""
    size = getattr(extractor, "image_size", None)
    if isinstance(size, int | tuple) and not isinstance(extractor, InceptionFeatures):
        images01 = resize_antialiased(images01, size)
    feats = extractor.features(images01)
    return feats.reshape(feats.shape[0], -1).float()
