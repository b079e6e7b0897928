"""Known library chatter is silenced by exact message, only inside our blocks; everything else still shows."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import pytest

from lit_medxchat.core.quiet import (
    DEEPSPEED_LOGGER,
    IMAGE_CLASSIFIER_HEAD,
    LIGHTNING_RANK_ZERO_LOGGER,
    from_pretrained_expecting,
    quiet_training,
    quiet_transformers,
)


def test_quiet_training_drops_only_the_known_warnings_and_restores_the_filters() -> None:
    inside = [
        ("Your `IterableDataset` has `__len__` defined. In combination with ...", UserWarning),
        ("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning),
        ("Found 72 module(s) in eval mode at the start of training. This may ...", UserWarning),
        ("shard train-000003.tar: sample 17 has no image; skipped", UserWarning),
        # the same text under another category is not ours to drop
        ("`isinstance(treespec, LeafSpec)` is deprecated, use ...", RuntimeWarning),
    ]
    filters_before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_training():
            for message, category in inside:
                warnings.warn(message, category, stacklevel=1)
        warnings.warn("Your `IterableDataset` has `__len__` defined (outside the block)", UserWarning, stacklevel=1)
    messages = [str(w.message) for w in caught]
    assert messages == [
        "shard train-000003.tar: sample 17 has no image; skipped",
        "`isinstance(treespec, LeafSpec)` is deprecated, use ...",
        "Your `IterableDataset` has `__len__` defined (outside the block)",
    ]
    assert warnings.filters == filters_before


def test_quiet_training_drops_lightning_tips_but_keeps_its_other_messages(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger(LIGHTNING_RANK_ZERO_LOGGER)
    with caplog.at_level(logging.INFO, logger=LIGHTNING_RANK_ZERO_LOGGER):
        with quiet_training():
            logger.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing litlogger")
            logger.info("`Trainer.fit` stopped: `max_steps=2` reached.")
        logger.info("💡 Tip: outside the block")
    assert [r.getMessage() for r in caplog.records] == [
        "`Trainer.fit` stopped: `max_steps=2` reached.",
        "💡 Tip: outside the block",
    ]
    assert not logger.filters


def test_quiet_transformers_restores_verbosity_and_progress_bars() -> None:
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    with pytest.raises(RuntimeError), quiet_transformers():
        assert hf_logging.get_verbosity() == hf_logging.ERROR
        assert not hf_logging.is_progress_bar_enabled()
        raise RuntimeError("a failed load still restores the settings")
    assert (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()) == before


def _tiny_resnet_classifier(folder: Path) -> None:
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    ResNetForImageClassification(config).save_pretrained(folder)


def _loader_output(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> str:
    captured = capfd.readouterr()
    return captured.out + captured.err + "\n".join(r.getMessage() for r in caplog.records)


def test_classifier_head_is_an_expected_unused_key(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from transformers import AutoModel

    _tiny_resnet_classifier(tmp_path / "classifier")
    capfd.readouterr()
    with caplog.at_level(logging.WARNING):
        backbone = from_pretrained_expecting(
            AutoModel.from_pretrained, str(tmp_path / "classifier"), expected=IMAGE_CLASSIFIER_HEAD
        )
    assert type(backbone).__name__ == "ResNetModel"
    output = _loader_output(capfd, caplog)
    assert "LOAD REPORT" not in output and "classifier.1" not in output and "Loading weights" not in output


def test_keys_outside_the_expected_prefixes_are_named_in_one_warning(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from transformers import AutoModel

    _tiny_resnet_classifier(tmp_path / "classifier")
    capfd.readouterr()
    with caplog.at_level(logging.WARNING):
        from_pretrained_expecting(AutoModel.from_pretrained, str(tmp_path / "classifier"))
    output = _loader_output(capfd, caplog)
    assert "LOAD REPORT" not in output
    (record,) = [r for r in caplog.records if r.name == "lit_medxchat.core.quiet"]
    assert "2 not used: classifier.1.bias, classifier.1.weight" in record.getMessage()
    assert str(tmp_path / "classifier") in record.getMessage()


def test_the_training_entry_point_imports_no_warning_filters_at_import_time() -> None:
    """Importing the helpers must not change the process's warning filters (no import-time side effects)."""
    import importlib

    before = list(warnings.filters)
    importlib.reload(sys.modules["lit_medxchat.core.quiet"])
    assert warnings.filters == before


def test_quiet_training_drops_deepspeeds_cpu_notice_only_where_torch_sees_no_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logger = logging.getLogger(DEEPSPEED_LOGGER)
    notice = "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it."
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        monkeypatch.setattr("torch.cuda.is_available", lambda: False)
        with quiet_training():
            logger.warning(notice)
            logger.warning("zero stage 2 optimizer")
        monkeypatch.setattr("torch.cuda.is_available", lambda: True)
        with quiet_training():
            logger.warning(notice)
    finally:
        logger.removeHandler(handler)
    assert seen == ["zero stage 2 optimizer", notice]
    assert not logger.filters
