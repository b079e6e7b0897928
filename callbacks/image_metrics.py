"""Text-to-CXR metrics callback: FID, findings-classifier accuracy/AUROC and view agreement.

Reads the diffusion model's step outputs ``{"generated": (B,3,H,W) in [0,1], "real": (B,3,H,W) in [0,1],
"labels": (B,14) 1/0/-1/nan, "view": (B,) VIEW_CLASSES index, "prompts": [...]}``. Images are turned
into features and probabilities on each rank as batches arrive (images are never gathered, only
(B, D) features and (B, 14) probabilities), then FID and the classifier scores are computed once
over all ranks' rows. Keys (``val/`` or ``test/``):

- ``fid_<extractor>``: ``fid_inception`` with `inception_weights`, else ``fid_findings-<model_type>``
  (the findings classifier's penultimate features); the extractor is named in the key on purpose:
  FIDs of different extractors are not comparable.
- ``t2i_findings_acc`` / ``t2i_findings_auroc_macro``: the findings classifier on generated images
  against the prompt's labels (paper Table 5); ``..._real`` the same on the real images (the ceiling).
  Accuracy thresholds probabilities at 0.5 over the (image, label) cells whose label is 1 or 0
  (uncertain -1 and blank are left out); AUROC per label over the same cells, macro over the labels
  with both classes present.
- ``t2i_view_acc``: the view classifier's arg-max on generated images equals the prompt's view.
- ``t2i_n``: images scored.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import nn

from callbacks.corpus_metric import CorpusMetricCallback
from lit_medxchat.core.constants import CHEXPERT_LABELS, VIEW_CLASSES


def _load(module: str | Path | nn.Module | None) -> nn.Module | None:
    if module is None or isinstance(module, nn.Module):
        return module
    from lit_medxchat.models.image_classifier import load_classifier

    return load_classifier(module)


def findings_scores(probs: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy and macro AUROC of (N, 14) probabilities against (N, 14) labels (1/0; -1 and nan ignored)."""
    from lit_medxchat.core.auroc import per_label_auroc

    defined = (labels == 0) | (labels == 1)
    if not defined.any():
        return {"acc": float("nan"), "auroc_macro": float("nan")}
    correct = ((probs >= threshold).float() == labels) & defined
    acc = float(correct.sum() / defined.sum())
    targets = torch.where(defined, labels, torch.full_like(labels, -1.0))  # -1: left out of the label's AUROC
    per_label = per_label_auroc(targets.numpy(), probs.double().numpy())
    aurocs = [value for value in per_label if not math.isnan(value)]
    undefined = [CHEXPERT_LABELS[j] for j, value in enumerate(per_label) if math.isnan(value)]
    if undefined:
        warnings.warn(
            f"text-to-CXR AUROC: {', '.join(undefined)} lack positives or negatives among the prompts; "
            "left out of the macro average",
            RuntimeWarning,
            stacklevel=2,
        )
    return {"acc": acc, "auroc_macro": sum(aurocs) / len(aurocs) if aurocs else float("nan")}


class ImageMetrics(CorpusMetricCallback):
    """FID and classifier-based scores of generated CXRs.

    Args:
        findings_classifier: path for `load_classifier` or a module with ``features``, ``predict_proba``,
            ``num_features``; judges generated images and, without Inception weights, extracts FID features.
        view_classifier: the same for views (``predict_proba`` -> (B, 4)); optional.
        inception_weights: local path of the TorchScript FID Inception (``inception-2015-12-05.pt``).
        log_samples: W&B grid of generated images with their prompts (off by default: patient data).
    """

    def __init__(
        self,
        findings_classifier: str | Path | nn.Module | None = None,
        view_classifier: str | Path | nn.Module | None = None,
        inception_weights: str | Path | None = None,
        threshold: float = 0.5,
        log_samples: bool = False,
        num_samples: int = 16,
        score_sanity_check: bool = False,
    ) -> None:
        super().__init__(score_sanity_check=score_sanity_check)
        if findings_classifier is None and inception_weights is None:
            raise ValueError("ImageMetrics needs findings_classifier (path or module) or inception_weights for FID")
        self._findings_src, self._view_src = findings_classifier, view_classifier
        self._inception_src = inception_weights
        self.findings: nn.Module | None = None
        self.view: nn.Module | None = None
        self.extractor: nn.Module | None = None
        self.threshold = threshold
        self.log_samples_enabled, self.num_samples = log_samples, num_samples
        self._samples: list[tuple[torch.Tensor, str]] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        from callbacks.scoring.fid import InceptionFeatures

        self.findings, self.view = _load(self._findings_src), _load(self._view_src)
        self.extractor = InceptionFeatures(self._inception_src) if self._inception_src else self.findings
        for module in {id(m): m for m in (self.findings, self.view, self.extractor) if m is not None}.values():
            module.eval().requires_grad_(False).to(pl_module.device)

    @property
    def fid_key(self) -> str:
        from callbacks.scoring.fid import extractor_name

        if self.extractor is None:
            raise RuntimeError("ImageMetrics.fid_key is known after setup()")
        return f"fid_{extractor_name(self.extractor)}"

    def _reset(self) -> None:
        super()._reset()
        self._samples = []

    @torch.no_grad()
    def collect(self, outputs: Any, batch: Any, pl_module: LightningModule) -> list[dict]:
        from callbacks.scoring.fid import extract_features

        gen = outputs["generated"].to(pl_module.device).float()
        real = outputs["real"].to(pl_module.device).float()
        if gen.ndim != 4 or real.ndim != 4:
            raise ValueError(f"expected (B,3,H,W) images, got generated {tuple(gen.shape)}, real {tuple(real.shape)}")
        item = {
            "gen_features": extract_features(self.extractor, gen).cpu(),
            "real_features": extract_features(self.extractor, real).cpu(),
            "labels": outputs["labels"].float().cpu(),
            "view": outputs["view"].long().cpu(),
        }
        if self.findings is not None:
            item["gen_probs"] = self.findings.predict_proba(gen).float().cpu()
            item["real_probs"] = self.findings.predict_proba(real).float().cpu()
        if self.view is not None:
            item["view_probs"] = self.view.predict_proba(gen).float().cpu()
        if self.log_samples_enabled and len(self._samples) < self.num_samples:
            prompts = outputs.get("prompts") or [""] * gen.shape[0]
            take = min(self.num_samples - len(self._samples), gen.shape[0])
            self._samples.extend((gen[i].cpu(), prompts[i]) for i in range(take))
        return [item]

    def score(self, items: list[dict]) -> dict[str, float | None]:
        from callbacks.scoring.fid import fid_from_features

        if not items:
            return {"t2i_n": 0.0}
        cat = {k: torch.cat([it[k] for it in items]) for k in items[0]}
        n = cat["labels"].shape[0]
        scores: dict[str, float | None] = {"t2i_n": float(n)}
        if n >= 2:
            scores[self.fid_key] = fid_from_features(cat["real_features"], cat["gen_features"])
        else:
            warnings.warn(f"FID needs at least 2 generated images, got {n}; not reported", RuntimeWarning, stacklevel=2)
        if "gen_probs" in cat:
            for suffix, key in (("", "gen_probs"), ("_real", "real_probs")):
                s = findings_scores(cat[key].cpu(), cat["labels"], self.threshold)
                scores[f"t2i_findings_acc{suffix}"] = s["acc"]
                scores[f"t2i_findings_auroc_macro{suffix}"] = s["auroc_macro"]
        if "view_probs" in cat:
            if cat["view_probs"].shape[1] != len(VIEW_CLASSES):
                raise ValueError(f"view classifier gives {cat['view_probs'].shape[1]} classes, not {len(VIEW_CLASSES)}")
            scores["t2i_view_acc"] = float((cat["view_probs"].argmax(1) == cat["view"]).float().mean())
        return scores

    def log_samples(self, trainer: Trainer, items: list[dict], stage: str) -> None:
        if not self.log_samples_enabled or not self._samples:
            return
        from callbacks.sample_logging import log_image_grid

        images = torch.stack([img for img, _ in self._samples])
        caption = " | ".join(f"{i}: {p}" for i, (_, p) in enumerate(self._samples))
        log_image_grid(trainer, f"{stage}/generated_cxr", images, caption)
