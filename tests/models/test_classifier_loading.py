"""Loading the classifiers without Lightning: checkpoint files through the weights-only reader and the
model registry, exported folders, refusals of pickled objects and foreign classes."""

from __future__ import annotations

import fractions
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from lit_medxchat.core.checkpoint_files import UnsafeCheckpointError
from lit_medxchat.core.constants import CHEXPERT_LABELS, VIEW_CLASSES
from lit_medxchat.models.classifiers import FindingsClassifier, ViewClassifier, tiny_findings_kwargs, tiny_view_kwargs
from lit_medxchat.models.image_classifier import ImageClassifierCore, load_classifier
from lit_medxchat.models.registry import UnknownModelError, load_core
from tests.models.cpu_trainer import cpu_trainer

SIZE = 32
MODULES = {"view": (ViewClassifier, tiny_view_kwargs), "findings": (FindingsClassifier, tiny_findings_kwargs)}


def _batches(n: int = 8, batches: int = 2) -> DataLoader:
    """Classifier batches (docs/data-contracts.md §3): normalised pixels, view index, labels and mask."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (n, len(CHEXPERT_LABELS)), generator=generator).float()
    batch = {
        "pixel_values": torch.randn(n, 3, SIZE, SIZE, generator=generator),
        "view": torch.arange(n) % len(VIEW_CLASSES),
        "labels": labels,
        "label_mask": torch.ones_like(labels),
    }
    return DataLoader([batch] * batches, batch_size=None)  # already batched


def _trained_checkpoint(kind: str, out_dir: Path) -> Path:
    """A Lightning checkpoint of a tiny classifier after two optimiser steps (weights moved off their init)."""
    torch.manual_seed(0)
    cls, tiny_kwargs = MODULES[kind]
    trainer = cpu_trainer(max_steps=2, default_root_dir=out_dir)
    trainer.fit(cls(**tiny_kwargs(SIZE)), _batches())
    path = out_dir / f"{kind}.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    out_dir = tmp_path_factory.mktemp("classifier-checkpoints")
    return {kind: _trained_checkpoint(kind, out_dir) for kind in MODULES}


def _rewritten(checkpoint: Path, out: Path, change) -> Path:
    """`checkpoint` with `change(dict)` applied, saved as a (possibly unsafe) pickle to `out`."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)  # our own file, written above
    change(state)
    torch.save(state, out)
    return out


@pytest.mark.parametrize("kind", MODULES)
def test_checkpoint_file_and_export_give_the_same_probabilities(kind, checkpoints, tmp_path):
    from_file = load_classifier(checkpoints[kind])
    assert isinstance(from_file, ImageClassifierCore) and from_file.kind == kind and not from_file.training
    written = from_file.export_pretrained(tmp_path / "export")
    assert {"config.json", "preprocessor_config.json", "lit_medxchat.json"} <= {p.name for p in written}
    from_export = load_classifier(tmp_path / "export")
    assert from_export.kind == kind and (from_export.image_size, from_export.image_mean) == (
        from_file.image_size,
        from_file.image_mean,
    )
    images = torch.rand(3, 1, 45, 37)
    assert torch.allclose(from_file.predict_proba(images), from_export.predict_proba(images), atol=1e-5)
    # The registry's generic loader builds the same core.
    assert torch.allclose(load_core(checkpoints[kind]).predict_proba(images), from_file.predict_proba(images))


def test_checkpoint_pickling_an_object_is_refused_naming_it(checkpoints, tmp_path):
    def pickle_a_fraction(state: dict) -> None:
        state["hyper_parameters"]["learning_rate"] = fractions.Fraction(1, 1000)

    unsafe = _rewritten(checkpoints["findings"], tmp_path / "unsafe.ckpt", pickle_a_fraction)
    with pytest.raises(UnsafeCheckpointError, match="fractions.Fraction"):
        load_classifier(unsafe)


def test_checkpoint_naming_a_foreign_class_is_refused_without_importing_it(checkpoints, tmp_path):
    def foreign(state: dict) -> None:
        state["module_class"] = "evil_payload_pkg.models.Classifier"

    path = _rewritten(checkpoints["view"], tmp_path / "foreign.ckpt", foreign)
    with pytest.raises(UnknownModelError, match="evil_payload_pkg.models.Classifier"):
        load_classifier(path)
    assert not [name for name in sys.modules if name.startswith("evil_payload_pkg")]


def test_checkpoint_of_another_of_our_models_is_not_a_classifier(checkpoints, tmp_path):
    def chat_model(state: dict) -> None:
        state["module_class"] = "lit_medxchat.models.llm_lora.MedXChatLoRA"

    path = _rewritten(checkpoints["view"], tmp_path / "chat.ckpt", chat_model)
    with pytest.raises(ValueError, match="'MedXChatLoRA', not a classifier"):
        load_classifier(path)


def test_checkpoints_written_before_the_core_split_still_load(checkpoints, tmp_path):
    """Older checkpoints keep the backbone at `model.` (no `core.` prefix): inference and resume read them."""

    def legacy_keys(state: dict) -> None:
        state["state_dict"] = {key.removeprefix("core."): value for key, value in state["state_dict"].items()}

    legacy = _rewritten(checkpoints["findings"], tmp_path / "legacy.ckpt", legacy_keys)
    images = torch.rand(2, 3, SIZE, SIZE)
    expected = load_classifier(checkpoints["findings"]).predict_proba(images)
    assert torch.allclose(load_classifier(legacy).predict_proba(images), expected)
    resumed = FindingsClassifier.load_from_checkpoint(legacy, map_location="cpu").eval()
    assert torch.allclose(resumed.predict_proba(images), expected)


def test_from_checkpoint_rejects_overrides_the_builder_does_not_take(checkpoints):
    state = torch.load(checkpoints["view"], map_location="cpu", weights_only=True)
    with pytest.raises(ValueError, match="learning_rate"):
        ImageClassifierCore.from_checkpoint(state, learning_rate=1.0)
    assert ImageClassifierCore.from_checkpoint(state, image_size=48).image_size == 48


def test_loading_a_classifier_imports_no_lightning(checkpoints):
    code = textwrap.dedent(
        f"""
        import sys
        import torch
        from lit_medxchat.models.image_classifier import load_classifier

        model = load_classifier({str(checkpoints["view"])!r})
        model.predict_proba(torch.rand(1, 1, 40, 40))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning"))
        assert not loaded, loaded
        """
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
