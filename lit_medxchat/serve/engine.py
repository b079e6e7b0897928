"""The chat behind the page, without gradio: conversations, streamed answers, drawn CXRs, predicted views.

One `ChatEngine` serves every browser tab. The model is not thread-safe and a CPU or a single GPU
runs one generation at a time anyway, so generations are serialised by a lock (the page's queue
already runs one at a time; the lock makes any other caller wait too). Each generation runs in a
worker thread that holds the lock; the caller only reads its queue of partial answers, so a caller
that goes away never leaves the lock held.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lit_medxchat.core.constants import VIEW_CLASSES, XRAY_START
from lit_medxchat.serve.streaming import GENERATION_DONE, AnswerStreamer
from lit_medxchat.serve.uploads import UploadedCXR

if TYPE_CHECKING:
    from PIL import Image

    from lit_medxchat.inference.pipeline import MedXChatPipeline

FRONTAL_VIEWS = ("PA", "AP")


@dataclass(frozen=True)
class GenerationSettings:
    """The page's generation settings (the collapsed panel); checked because API callers skip the sliders."""

    num_beams: int = 1
    max_new_tokens: int = 128
    num_inference_steps: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        limits = {"num_beams": (1, 16), "max_new_tokens": (1, 2048), "num_inference_steps": (1, 1000),
                  "seed": (0, 2**31 - 1)}
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"generation setting {name}={value!r} must be an integer in [{low}, {high}]")


@dataclass(frozen=True)
class ViewPrediction:
    """The view classifier's verdict on one upload."""

    view: str  # one of VIEW_CLASSES
    probability: float

    @property
    def caption(self) -> str:
        return f"{self.view} {self.probability:.0%}"


@dataclass
class Conversation:
    """One browser tab's conversation.

    Attributes:
        images: the CXRs it reads (they belong to the first user turn, as in training).
        views: the view classifier's prediction per image (empty without a view classifier).
        turns: the model's history, `{"role": "user"|"assistant", "content": text}`, answers with
            their `<Xray>` spans, exactly as the conversation format encodes them.
        messages: what the chat window shows (gradio message dicts), built alongside `turns`.
    """

    images: list[UploadedCXR] = field(default_factory=list)
    views: list[ViewPrediction] = field(default_factory=list)
    turns: list[dict[str, str]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class AnswerUpdate:
    """A step of an answer: `text` so far; with `done`, the whole answer, its drawn CXRs and warnings."""

    text: str
    drawing: bool = False  # the text is complete and CXRs are being drawn
    done: bool = False
    xray_prompts: tuple[str, ...] = ()
    images: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()


class ChatEngine:
    """Answers conversations with a `MedXChatPipeline`; drawn CXRs are written under `output_dir`.

    Args:
        pipeline: the chat pipeline (its `diffusion` draws `<Xray>` prompts when set).
        view_classifier: a `ViewClassifier` to caption uploads with their view, or None.
        output_dir: a folder the server owns and removes (drawn PNGs are served from there).
    """

    def __init__(self, pipeline: MedXChatPipeline, output_dir: str | Path, view_classifier: Any = None) -> None:
        self.pipeline = pipeline
        self.view_classifier = view_classifier
        self.output_dir = Path(output_dir)
        self._lock = threading.Lock()

    @property
    def can_draw(self) -> bool:
        return self.pipeline.diffusion is not None

    def default_settings(self) -> GenerationSettings:
        options = self.pipeline.model.generation_options
        return GenerationSettings(
            num_beams=int(options.num_beams),
            max_new_tokens=int(options.max_new_tokens),
            num_inference_steps=int(self.pipeline.num_inference_steps),
            seed=int(self.pipeline.seed),
        )

    @torch.no_grad()
    def predict_views(self, images: list[Image.Image]) -> list[ViewPrediction]:
        """The view of each image (letterboxed like the classifier's training data); [] without a classifier."""
        if self.view_classifier is None or not images:
            return []
        from datamodules.transforms import square_grey

        size = self.view_classifier.image_size
        batch = torch.stack([torch.tensor(square_grey(image, size)).float().div(255.0)[None] for image in images])
        with self._lock:
            probabilities = self.view_classifier.predict_proba(batch).cpu()
        best = probabilities.argmax(dim=1)
        return [ViewPrediction(VIEW_CLASSES[int(i)], float(row[int(i)])) for i, row in zip(best, probabilities,
                                                                                            strict=True)]

    def answer(
        self, conversation: Conversation, instruction: str, settings: GenerationSettings
    ) -> Iterator[AnswerUpdate]:
        """Stream the answer to `instruction` after `conversation` (which is not changed).

        Yields partial texts (greedy/sampled decoding; beam search yields only the end), then one
        `drawing` update when CXRs are being drawn, then the `done` update. Errors of the model
        (a question too long for `max_length`, ...) are raised here, in the caller's thread.
        """
        updates: queue.Queue = queue.Queue()
        outcome: dict[str, Any] = {}
        overrides: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "num_beams": settings.num_beams}
        if settings.num_beams == 1:
            overrides["streamer"] = AnswerStreamer(self.pipeline.model.tokenizer, updates)
        images = [cxr.image for cxr in conversation.images]
        history = [dict(turn) for turn in conversation.turns]

        def generate() -> None:
            try:
                with self._lock:
                    self.pipeline.num_inference_steps = settings.num_inference_steps
                    self.pipeline.seed = settings.seed
                    outcome["response"] = self.pipeline(instruction, images=images, history=history, **overrides)
            except Exception as error:  # handed to the caller's thread, raised there
                outcome["error"] = error
            finally:
                updates.put(_FINISHED)

        worker = threading.Thread(target=generate, name="medxchat-generate", daemon=True)
        worker.start()
        text = ""
        while (item := updates.get()) is not _FINISHED:
            if item is GENERATION_DONE:
                if XRAY_START in text and self.can_draw:
                    yield AnswerUpdate(text, drawing=True)
            else:
                text = item
                yield AnswerUpdate(text)
        worker.join()
        if "error" in outcome:
            raise outcome["error"]
        response = outcome["response"]
        paths = []
        if response.images:
            paths = response.save_images(self.output_dir / uuid.uuid4().hex, stem="synthetic-cxr")
        yield AnswerUpdate(response.answer, done=True, xray_prompts=tuple(response.xray_prompts), images=tuple(paths),
                           warnings=tuple(response.warnings))


_FINISHED = object()
