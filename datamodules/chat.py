"""Batches for the MedXChat LLM: image(s) + one instruction dialogue, tokenised in the project's conversation format.

Each sample holds several dialogues (report, VQA, text-to-CXR). Per sample and epoch one is drawn: first a
task with probability proportional to `task_weights` among the tasks the sample has, then a dialogue of that
task. The draw is seeded per sample, so it is the same after a resume and for any number of workers.

Report and VQA dialogues get the sample's image (and, with `multi_view`, the study's partner view: frontal
first, lateral second); text-to-CXR dialogues get none. Validation/test batches add the left-padded prompt
of the dialogue's last assistant turn for generation, its reference text and what the metric callbacks
need (`meta`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from datamodules.resume import ResumableLoader
from datamodules.shard_datamodule import ShardDataModule, index_keys
from datamodules.shard_reader import RawSample, SkipSample
from datamodules.step_totals import StepTotals
from datamodules.streaming import EVENTS_KEY, batch_tensor
from datamodules.transforms import CLIP_MEAN, CLIP_STD, Augment, ImagePipeline
from lit_medxchat.core.constants import CHAT_TASKS
from lit_medxchat.core.conversation import (
    IGNORE_INDEX,
    STEP_ANSWER_TOKENS,
    ConversationTooLongError,
    encode_conversation,
    encode_prompt,
    supervised_tokens,
)

log = logging.getLogger(__name__)
FRONTAL_VIEWS = ("PA", "AP")
_TOKENIZERS: dict[str, Any] = {}


def load_tokenizer(path: str) -> Any:
    """The run's tokenizer (cached per process: workers load it once).

    A base LLM's tokenizer (e.g. a hub id in the paper config) lacks `<image>`, `<Xray>`, `</Xray>`:
    they are added exactly as the model adds them, so data and model agree on every token id.
    """
    if path not in _TOKENIZERS:
        from transformers import AutoTokenizer

        from lit_medxchat.core.tokenizer import add_medxchat_tokens

        tokenizer = AutoTokenizer.from_pretrained(path)
        add_medxchat_tokens(tokenizer)
        _TOKENIZERS[path] = tokenizer
    return _TOKENIZERS[path]


def pick_dialogue(dialogues: list[dict], weights: dict[str, float], rng: np.random.Generator) -> dict:
    """A task drawn by `weights` among the tasks present, then one of its dialogues, uniformly."""
    by_task: dict[str, list[dict]] = {}
    for dialogue in dialogues:
        if weights.get(dialogue.get("task"), 0.0) > 0:
            by_task.setdefault(dialogue["task"], []).append(dialogue)
    if not by_task:
        raise SkipSample("no-dialogue", f"no dialogue of a task with positive weight {weights}")
    tasks = sorted(by_task)
    probabilities = np.array([weights[task] for task in tasks], dtype=np.float64)
    task = tasks[rng.choice(len(tasks), p=probabilities / probabilities.sum())]
    options = by_task[task]
    return options[rng.integers(len(options))]


def partner_key(meta: dict[str, Any]) -> str | None:
    """The study's other view to pair with this image: a lateral for a frontal, a frontal (PA first) for a lateral."""
    view = meta.get("view")
    others = [image for image in meta.get("study_images") or [] if image.get("dicom_id") != meta.get("dicom_id")]
    wanted = ("LATERAL",) if view in FRONTAL_VIEWS else FRONTAL_VIEWS if view == "LATERAL" else ()
    for target in wanted:
        for image in others:
            if image.get("view") == target:
                return image["dicom_id"]
    return None


@dataclass
class ChatExample:
    """One sample -> token ids, labels, image tensors (and prompt fields for evaluation). Picklable."""

    tokenizer_path: str
    images: ImagePipeline
    task_weights: dict[str, float]
    num_image_tokens: int
    max_length: int
    multi_view: bool
    evaluation: bool
    blank_images: bool = False
    _tokenizer: Any = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokenizer": None}

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_path)
        return self._tokenizer

    def _pixels(self, sample: RawSample, meta: dict[str, Any], rng: np.random.Generator,
                events: list[str]) -> list[torch.Tensor]:
        own = self.images(sample.member("jpg"), rng)
        if not self.multi_view:
            return [own]
        key = partner_key(meta)
        partner = sample.lookup(key) if key is not None and sample.lookup is not None else None
        if partner is None:
            return [own]
        try:
            other = self.images(partner.member("jpg"), rng)
        except SkipSample as error:
            log.warning("%s: partner view %s of %s unreadable (%s); using the single view", sample.shard, key,
                        sample.key, error)
            events.append("partner-unreadable")
            return [own]
        events.append("paired")
        return [own, other] if meta.get("view") in FRONTAL_VIEWS else [other, own]

    def __call__(self, sample: RawSample, rng: np.random.Generator) -> dict[str, Any]:
        meta = sample.json("json")
        dialogues = (sample.json("conv.json") or {}).get("dialogues") or []
        dialogue = pick_dialogue(dialogues, self.task_weights, rng)
        task, turns = dialogue["task"], dialogue.get("turns") or []
        events: list[str] = []
        pixels = self._pixels(sample, meta, rng, events) if task != "t2i" else []
        if self.blank_images:  # the image-free baseline: same tokens and shapes, no pixel information
            pixels = [torch.zeros_like(p) for p in pixels]
        try:
            encoded = encode_conversation(self.tokenizer, turns, num_images=len(pixels),
                                          num_image_tokens=self.num_image_tokens, max_length=self.max_length)
        except ConversationTooLongError as error:
            raise SkipSample("too-long", f"{sample.key} ({task}): {error}") from error
        except ValueError as error:
            raise SkipSample("bad-dialogue", f"{sample.key} ({task}): {error}") from error
        if encoded.truncated:
            events.append("truncated")
        example: dict[str, Any] = {
            "input_ids": encoded.input_ids,
            "labels": encoded.labels,
            "pixel_values": pixels,
            "task": task,
            "key": sample.key,
            EVENTS_KEY: events,
        }
        if self.evaluation:
            example.update(self._prompt_fields(sample, meta, task, turns, len(pixels)))
        return example

    def _prompt_fields(self, sample: RawSample, meta: dict[str, Any], task: str, turns: list[dict],
                       num_images: int) -> dict[str, Any]:
        last = max(index for index, turn in enumerate(turns) if turn.get("role") == "assistant")
        try:
            prompt = encode_prompt(self.tokenizer, turns[:last], num_images=num_images,
                                   num_image_tokens=self.num_image_tokens, max_length=self.max_length)
        except ValueError as error:
            raise SkipSample("bad-prompt", f"{sample.key} ({task}): {error}") from error
        evaluated = turns[last]
        return {
            "prompt_input_ids": prompt,
            "reference": str(evaluated["content"]),
            "meta": {
                "key": sample.key,
                "study_id": meta.get("study_id"),
                "task": task,
                "labels": meta.get("labels"),
                "view": meta.get("view"),
                "topic": evaluated.get("topic"),
                "diagnosis": evaluated.get("diagnosis"),
                "answer": evaluated.get("answer"),
            },
        }


@dataclass(frozen=True)
class ChatCollate:
    """Pads a list of chat examples into the chat batch of data contract §3."""

    pad_token_id: int
    image_size: int
    evaluation: bool

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch_size = len(examples)
        length = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((batch_size, length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
        labels = torch.full((batch_size, length), IGNORE_INDEX, dtype=torch.long)
        num_images = max(1, max(len(e["pixel_values"]) for e in examples))
        pixel_values = batch_tensor((batch_size, num_images, 3, self.image_size, self.image_size)).zero_()
        image_mask = torch.zeros((batch_size, num_images), dtype=torch.bool)
        for row, example in enumerate(examples):
            size = len(example["input_ids"])  # right padding
            input_ids[row, :size] = torch.tensor(example["input_ids"])
            attention_mask[row, :size] = 1
            labels[row, :size] = torch.tensor(example["labels"])
            for column, image in enumerate(example["pixel_values"]):
                pixel_values[row, column] = image
                image_mask[row, column] = True
        batch: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "pixel_values": pixel_values,
            "image_mask": image_mask,
            "tasks": [e["task"] for e in examples],
            "keys": [e["key"] for e in examples],
        }
        if self.evaluation:
            batch.update(self._prompts(examples))
        return batch

    def _prompts(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        length = max(len(e["prompt_input_ids"]) for e in examples)
        prompt_ids = torch.full((len(examples), length), self.pad_token_id, dtype=torch.long)
        prompt_mask = torch.zeros((len(examples), length), dtype=torch.long)
        for row, example in enumerate(examples):
            size = len(example["prompt_input_ids"])  # left padding: generation continues from the last column
            prompt_ids[row, length - size :] = torch.tensor(example["prompt_input_ids"])
            prompt_mask[row, length - size :] = 1
        return {
            "prompt_input_ids": prompt_ids,
            "prompt_attention_mask": prompt_mask,
            "references": [e["reference"] for e in examples],
            "meta": [e["meta"] for e in examples],
        }


def _batch_answer_tokens(batch: dict[str, Any]) -> int:
    return supervised_tokens(batch["labels"])


class ChatDataModule(ShardDataModule):
    """MedXChat LLM batches (data contract §3, chat batch).

    Args:
        tokenizer_path: folder of the run's tokenizer (`save_pretrained` output holding `<image>`,
            `<Xray>`, `</Xray>`); the same tokenizer the model uses.
        num_image_tokens: `<image>` tokens per image (the visual adapter's number of queries).
        image_size: vision tower input side in pixels (224 for CLIP ViT-L/14).
        image_mean, image_std: vision tower normalisation (CLIP's by default).
        max_length: maximum tokens per training sequence; longer dialogues lose trailing turns (counted as
            `truncated`), and samples whose first answer cannot fit are skipped (`skipped/too-long`).
        task_weights: relative weights of `report`, `vqa`, `t2i` when drawing a sample's dialogue (a task
            the sample lacks is not drawn; weight 0 disables a task). Default: equal.
        multi_view: pair each frontal image with its study's lateral (and vice versa) when both are in the
            split's shards; report/VQA samples then carry two images.
        augment: random rotation/zoom/shift and brightness/contrast on training images (never flips).
        blank_images: replace every image by a constant one (the normalised mean) in all splits: the
            baseline that shows how much of a model's score comes from the images rather than the text.
        (the remaining arguments are `ShardDataModule`'s)
    """

    def __init__(
        self,
        data_dir: str,
        tokenizer_path: str,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        seed: int = 1234,
        shuffle_window: int = 1024,
        pin_memory: bool = False,
        num_image_tokens: int = 64,
        image_size: int = 224,
        image_mean: tuple[float, float, float] = CLIP_MEAN,
        image_std: tuple[float, float, float] = CLIP_STD,
        max_length: int = 512,
        task_weights: dict[str, float] | None = None,
        multi_view: bool = False,
        augment: bool = True,
        blank_images: bool = False,
        retries: int = 3,
        retry_backoff: float = 1.0,
        cache_dir: str | None = None,
        cache_size_gb: float = 100.0,
        lanes: int | None = None,
    ) -> None:
        super().__init__(data_dir, batch_size, eval_batch_size, num_workers, seed, shuffle_window, pin_memory,
                         retries, retry_backoff, cache_dir, cache_size_gb, lanes)
        weights = dict(task_weights) if task_weights is not None else {task: 1.0 for task in CHAT_TASKS}
        unknown = sorted(set(weights) - set(CHAT_TASKS))
        if unknown or any(value < 0 for value in weights.values()) or not any(weights.values()):
            raise ValueError(f"task_weights={weights}: keys must be among {CHAT_TASKS}, values >= 0, one positive")
        self.save_hyperparameters()
        self.tokenizer_path = str(tokenizer_path)
        self.num_image_tokens = num_image_tokens
        self.image_size = image_size
        self.image_mean, self.image_std = tuple(image_mean), tuple(image_std)
        self.max_length = max_length
        self.task_weights = weights
        self.multi_view = multi_view
        self.blank_images = blank_images
        self.augmentation = Augment() if augment else None
        self._key_locations: dict[str, dict[str, tuple[int, int]]] = {}

    @property
    def tokenizer(self) -> Any:
        return load_tokenizer(self.tokenizer_path)

    def train_dataloader(self) -> ResumableLoader:
        """Training batches, each carrying `step_answer_tokens`: the answer tokens of its whole optimiser step on
        this rank, so the model's loss is a mean over the step's tokens (`datamodules.step_totals`)."""
        loader = super().train_dataloader()
        trainer = getattr(self, "trainer", None)
        accumulate = int(trainer.accumulate_grad_batches) if trainer is not None else 1
        loader.step_totals = StepTotals(STEP_ANSWER_TOKENS, _batch_answer_tokens, accumulate)
        return loader

    def example_fn(self, split: str, train: bool) -> ChatExample:
        images = ImagePipeline(self.image_size, self.image_mean, self.image_std, self.augmentation if train else None)
        return ChatExample(self.tokenizer_path, images, self.task_weights, self.num_image_tokens, self.max_length,
                           self.multi_view, evaluation=not train, blank_images=self.blank_images)

    def collate_fn(self, split: str, train: bool) -> ChatCollate:
        tokenizer = self.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError(f"tokenizer at {self.tokenizer_path} has neither a pad nor an eos token")
        return ChatCollate(int(pad), self.image_size, evaluation=not train)

    def key_locations(self, split: str) -> dict[str, tuple[int, int]] | None:
        if not self.multi_view:
            return None
        if split not in self._key_locations:
            self._key_locations[split] = index_keys(self.manifests[split])
        return self._key_locations[split]
