"""View (ViT) and findings (ResNet) classifiers at tiny scale: the judge/FID API, masked multi-label
loss, training, validation metrics, checkpoints and config errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from lit_medxchat.core.constants import CHEXPERT_LABELS, VIEW_CLASSES
from lit_medxchat.models.classifiers import FindingsClassifier, ViewClassifier, tiny_findings_kwargs, tiny_view_kwargs
from lit_medxchat.models.image_classifier import ImageClassifierCore, load_classifier
from tests.models.cpu_trainer import cpu_trainer

SIZE = 32


def classifier_batch(n: int = 8, seed: int = 0) -> dict:
    """A classifier batch per docs/data-contracts.md §3 (already normalised pixel values)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n, len(CHEXPERT_LABELS)), generator=generator).float()
    mask = (torch.rand(n, len(CHEXPERT_LABELS), generator=generator) > 0.2).float()
    return {
        "pixel_values": torch.randn(n, 3, SIZE, SIZE, generator=generator),
        "view": torch.arange(n) % len(VIEW_CLASSES),
        "labels": labels,
        "label_mask": mask,
        "keys": [f"k{i}" for i in range(n)],
    }


class RepeatBatch(Dataset):
    def __init__(self, batch: dict, length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        i = index % len(self.batch["keys"])
        return {key: value[i] for key, value in self.batch.items()}


def loader(batch: dict, batches: int = 1) -> DataLoader:
    n = len(batch["keys"])
    return DataLoader(RepeatBatch(batch, n * batches), batch_size=n)


MODELS = {
    "view": lambda **kw: ViewClassifier(**{**tiny_view_kwargs(SIZE), **kw}),
    "findings": lambda **kw: FindingsClassifier(**{**tiny_findings_kwargs(SIZE), **kw}),
}


@pytest.mark.parametrize("kind", MODELS)
def test_judge_api_takes_images01_of_any_size(kind):
    model = MODELS[kind]().eval()
    grey = torch.rand(3, 1, 50, 41)
    probs = model.predict_proba(grey)
    assert probs.shape == (3, 4 if kind == "view" else 14)
    assert ((probs >= 0) & (probs <= 1)).all()
    if kind == "view":
        assert torch.allclose(probs.sum(-1), torch.ones(3))
    # grey and replicated-RGB inputs are the same image
    assert torch.allclose(probs, model.predict_proba(grey.expand(-1, 3, -1, -1)))
    features = model.features(grey)
    assert features.shape == (3, model.num_features) and torch.isfinite(features).all()
    pre = model.preprocess(grey)
    assert pre.shape == (3, 3, SIZE, SIZE)
    # normalisation: a mid-grey image maps to (0.5 - mean) / std
    expected = (0.5 - torch.tensor(model.image_mean)) / torch.tensor(model.image_std)
    assert torch.allclose(model.preprocess(torch.full((1, 1, SIZE, SIZE), 0.5))[0, :, 0, 0], expected)
    # Judging a model that is training neither changes its BatchNorm statistics nor its mode.
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert torch.allclose(model.predict_proba(grey), probs) and model.model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="images01"):
        model.preprocess(torch.rand(2, 2, SIZE, SIZE))


def test_label_mask_removes_ignored_labels_from_the_loss():
    model = FindingsClassifier(**tiny_findings_kwargs(SIZE)).eval()
    batch = classifier_batch()
    base = model.compute_loss(batch)[0]
    flipped = dict(batch, labels=torch.where(batch["label_mask"] > 0, batch["labels"], 1 - batch["labels"]))
    assert torch.allclose(model.compute_loss(flipped)[0], base)  # ignored entries do not count
    changed = dict(batch, labels=1 - batch["labels"])
    assert not torch.allclose(model.compute_loss(changed)[0], base)


@pytest.mark.parametrize("kind", MODELS)
def test_fit_lowers_loss_on_a_fixed_batch_and_validation_reports_metrics(kind):
    torch.manual_seed(0)
    model = MODELS[kind]()
    batch = classifier_batch()
    model.eval()
    with torch.no_grad():
        before = model.compute_loss(batch)[0].item()
    cpu_trainer(max_steps=30).fit(model, loader(batch, 30))
    model.eval()
    with torch.no_grad():
        after = model.compute_loss(batch)[0].item()
    assert after < 0.7 * before, f"{kind}: loss {before:.3f} -> {after:.3f}"
    metrics = cpu_trainer().validate(model, loader(batch, 2), verbose=False)[0]
    assert {"val/loss", "val/accuracy", "val/auroc"} <= set(metrics)
    assert metrics["val/loss"] == pytest.approx(after, rel=1e-4)
    assert metrics["val/auroc"] > 0.5


@pytest.mark.parametrize("kind", MODELS)
def test_checkpoint_round_trip_and_trainable_count(kind, tmp_path):
    model = MODELS[kind]()
    # Every classifier weight trains; the count is that of the transformers backbone.
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == sum(
        p.numel() for p in model.model.parameters()
    )
    run = cpu_trainer(max_steps=2, default_root_dir=tmp_path)
    run.fit(model, loader(classifier_batch(), 2))
    run.save_checkpoint(tmp_path / "c.ckpt")
    restored = load_classifier(tmp_path / "c.ckpt")
    # The loader returns the Lightning-free core; its kind says which classifier it is.
    assert isinstance(restored, ImageClassifierCore) and restored.kind == kind and not restored.training
    images = torch.rand(2, 1, SIZE, SIZE)
    assert torch.allclose(restored.predict_proba(images), model.eval().predict_proba(images))
    if kind == "findings":
        assert restored.uncertain_policy == "ones"


def test_vit_at_another_image_size_interpolates_positions():
    model = ViewClassifier(**{**tiny_view_kwargs(SIZE), "image_size": 48}).eval()
    assert model.predict_proba(torch.rand(1, 1, 64, 64)).shape == (1, 4)


@pytest.mark.parametrize(
    ("kind", "change", "field"),
    [
        ("view", {"image_size": 36}, "image_size"),
        ("view", {"config": {**tiny_view_kwargs()["config"], "model_type": "swin"}}, "config.model_type"),
        ("findings", {"config": {"model_type": "vit"}}, "config.model_type"),
        ("findings", {"uncertain_policy": "maybe"}, "uncertain_policy"),
        ("findings", {"image_size": 16}, "image_size"),
        ("view", {"config": None}, "name_or_path"),
        ("view", {"image_mean": (0.5, 0.5)}, "image_mean"),
    ],
)
def test_bad_configs_fail_early_naming_the_field(kind, change, field):
    with pytest.raises(ValueError, match=field):
        MODELS[kind](**change)


def test_findings_auroc_skips_labels_without_both_classes_instead_of_crashing():
    """A label whose entries are all masked (or all negative) has no AUROC: left out, never 0, never a crash."""
    model = MODELS["findings"]().eval()
    batch = classifier_batch(n=8, seed=3)
    batch["label_mask"][:, 0] = 0  # label 0 entirely ignored (e.g. all blank)
    batch["labels"][:, 1] = 0  # label 1 without positives
    metrics = cpu_trainer().validate(model, loader(batch, 2), verbose=False)[0]
    with torch.no_grad():
        probs = model.logits(batch["pixel_values"]).sigmoid()
    target = torch.where(batch["label_mask"] > 0, batch["labels"].long(), torch.full_like(batch["labels"], -1).long())
    expected = model.macro_auroc(torch.cat([probs, probs]), torch.cat([target, target]))
    assert metrics["val/auroc"] == pytest.approx(expected, abs=1e-6)
    only_label_1 = torch.full_like(target, -1)
    only_label_1[:, 1] = 0
    assert math.isnan(model.macro_auroc(probs, only_label_1))
