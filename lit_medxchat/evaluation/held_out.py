"""Running a trained model over a held-out split with one metric callback: the machinery `lit-medxchat evaluate`
and the demo's evaluation share, so both compute a figure the same way."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_medxchat.core.quiet import (
    LIGHTNING_RANK_ZERO_LOGGER,
    loggers_at_level,
    quiet_training,
    quiet_transformers,
)

# Held-out batches are this many samples (chat answers, CXR-SD prompts).
EVAL_BATCH_SIZE = 16
# DataModule options a chat run's test data must share with its training data.
CHAT_DATA_OPTIONS = ("num_image_tokens", "image_size", "image_mean", "image_std", "max_length", "multi_view")


def saved_data_args(run_dir: Path, names: tuple[str, ...]) -> dict[str, Any]:
    """The DataModule options a run was trained with, from the config LightningCLI saved beside its logs."""
    import yaml

    configs = sorted(run_dir.glob("lightning_logs/version_*/config.yaml")) or sorted(run_dir.glob("config.yaml"))
    if not configs:
        raise FileNotFoundError(f"{run_dir} holds no saved config.yaml: was it trained with `lit-medxchat fit`?")
    init_args = yaml.safe_load(configs[-1].read_text())["data"]["init_args"]
    return {name: init_args[name] for name in names if name in init_args}


def batches_for(limit: int) -> int | float:
    """Lightning's `limit_*_batches` for at most `limit` samples (every batch when 0; at least one batch)."""
    return 1.0 if limit == 0 else max(1, limit // EVAL_BATCH_SIZE)


def held_out_test(
    model: Any, datamodule: Any, callback: Any, limit_batches: int | float, progress: bool = False,
    split: str = "test",
) -> float | None:
    """One CPU `trainer.test` (or `trainer.validate` for `split="validate"`) with `callback`, quiet; the logged
    loss (None when the model logs none).

    The Trainer is built inside `quiet_training`: Lightning's tips and DeepSpeed's CPU notice come then.
    """
    from lightning.pytorch import Trainer

    # Lightning's per-Trainer notices ("GPU available: False, ...") off: an evaluation builds a Trainer per model
    # and task, and the lines would bury its progress.
    with quiet_training(), loggers_at_level(logging.WARNING, LIGHTNING_RANK_ZERO_LOGGER):
        trainer = Trainer(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=progress,
            enable_model_summary=False,
            callbacks=[callback],
            limit_test_batches=limit_batches,
            limit_val_batches=limit_batches,
        )
        run = trainer.validate if split == "validate" else trainer.test
        run(model, datamodule=datamodule, verbose=False)
    loss = trainer.callback_metrics.get("val/loss" if split == "validate" else "test/loss")
    return None if loss is None else float(loss)


@dataclass(frozen=True)
class ChatTestSplit:
    """What a chat model is tested on: a split of the shards (`test` or `validate`), read with the chat tokenizer.

    `limit` caps the samples generated per task (all of them when 0), in batches of 16.
    """

    data_dir: Path
    tokenizer_path: str | Path
    limit: int
    split: str = "test"


def chat_test_data(run_dir: Path, split: ChatTestSplit, task: str, blank_images: bool) -> Any:
    """The chat DataModule asking every sample of the split for `task` (each image its report, ...)."""
    from datamodules.chat import ChatDataModule

    return ChatDataModule(
        str(split.data_dir),
        tokenizer_path=str(split.tokenizer_path),
        batch_size=EVAL_BATCH_SIZE,
        num_workers=0,
        seed=0,
        task_weights={task: 1.0},
        augment=False,
        blank_images=blank_images,
        **saved_data_args(run_dir, CHAT_DATA_OPTIONS),
    )


def run_chat_test(
    checkpoint: str | Path, split: ChatTestSplit, task: str, blank_images: bool, generate: bool = True,
    progress: bool = False, meteor: bool = True,
) -> Any:
    """Generate on the split for one task; return the metric callback (`last_scores`, `last_items`).

    With `generate=False` only the teacher-forced loss is computed (`last_scores["test_loss"]`).
    """
    from callbacks.report_metrics import ReportMetrics
    from callbacks.text_to_cxr_metrics import TextToCXRMetrics
    from callbacks.vqa_metrics import VQAMetrics
    from lit_medxchat.models.llm_lora import MedXChatLoRA

    with quiet_transformers():  # no weight-loading bars between the evaluation's own progress lines
        model = MedXChatLoRA.load_from_checkpoint(checkpoint, map_location="cpu")
    callbacks = {"report": lambda: ReportMetrics(meteor=meteor), "vqa": VQAMetrics, "t2i": TextToCXRMetrics}
    callback = callbacks[task]() if generate else TextToCXRMetrics()  # scores nothing: no t2i items
    if not generate:
        model.generation_options.max_new_tokens = 1
    data = chat_test_data(Path(checkpoint).parents[1], split, task, blank_images)
    loss = held_out_test(model, data, callback, batches_for(split.limit), progress=progress, split=split.split)
    callback.last_scores = {**callback.last_scores, "test_loss": loss}
    callback.skipped = data.skipped_counts(split.split)  # samples without this task's dialogue, decode errors, ...
    return callback


def train_dialogue_answers(data_dir: Path) -> tuple[Counter, dict[tuple, Counter]]:
    """The training split's report answers, and its VQA answers per question type (topic, diagnosis)."""
    from datamodules.streaming import iter_samples

    reports: Counter = Counter()
    answers: dict[tuple, Counter] = {}
    for sample in iter_samples(data_dir, "train"):
        for dialogue in sample.json("conv.json")["dialogues"]:
            for turn in dialogue["turns"]:
                if turn["role"] != "assistant":
                    continue
                if dialogue["task"] == "report":
                    reports[turn["content"]] += 1
                elif dialogue["task"] == "vqa":
                    key = (turn.get("topic"), turn.get("diagnosis"))
                    answers.setdefault(key, Counter())[turn["content"]] += 1
    return reports, answers


def majority_vqa(items: list[dict], answers: dict[tuple, Counter]) -> dict[str, float]:
    """VQA accuracy of answering each question with the training split's most frequent answer to its type."""
    from callbacks.scoring.vqa import vqa_accuracy

    overall: Counter = Counter()
    for counter in answers.values():
        overall.update(counter)
    predictions = []
    for item in items:
        counter = answers.get((item["meta"]["topic"], item["meta"]["diagnosis"])) or overall
        predictions.append(counter.most_common(1)[0][0])
    return vqa_accuracy(predictions, [i["reference"] for i in items], [i["meta"] for i in items])


def run_vqa_protocol(checkpoint: str | Path, split: ChatTestSplit, items: list, blank_images: bool,
                     progress: bool = False) -> tuple[list[dict[str, Any]], Counter]:
    """The chat run's answers to the VQA protocol's items (`evaluation.vqa_protocol`), and the skips by reason."""
    from lit_medxchat.evaluation.vqa_protocol import answer_protocol
    from lit_medxchat.models.llm_lora import MedXChatLoRA

    with quiet_transformers():
        model = MedXChatLoRA.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    data = chat_test_data(Path(checkpoint).parents[1], split, "vqa", blank_images)
    return answer_protocol(model, data, split.split, items, progress=progress)
