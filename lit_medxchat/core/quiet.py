"""Library chatter we know to be harmless, silenced only where it arises and only for our own calls.

A training run's console should hold its own progress and the warnings a user can act on. Lightning,
torch, peft and transformers add notices that say nothing about the run (deprecations inside Lightning,
adverts, a LOAD REPORT table listing the classifier head we meant to drop). Each is silenced here by its
exact message and category, inside a `with` block that restores every filter and log level on exit,
so no other code in the process loses a warning. Anything not listed still reaches the console.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownWarning:
    """A library warning that carries no information about our runs.

    `message` is a regex matched against the start of the warning text (as `warnings.filterwarnings` does);
    `category` the class the library raises it with (subclasses match too); `why` the reason it can be ignored.
    """

    message: str
    category: type[Warning]
    why: str


PEFT_GRADIENT_CHECKPOINTING = KnownWarning(
    r"`is_gradient_checkpointing` is deprecated",
    FutureWarning,
    "peft reads transformers' deprecated property while wrapping the LLM with LoRA",
)


TRAINING_WARNINGS: tuple[KnownWarning, ...] = (
    KnownWarning(
        r"Your `IterableDataset` has `__len__` defined",
        UserWarning,
        "datamodules.streaming.ShardBatchStream.__len__ is the rank's batch count from the epoch plan, and the "
        "DataLoader workers split those batches between them, so the length is exact for any num_workers",
    ),
    KnownWarning(
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        FutureWarning,
        "torch deprecates LeafSpec; Lightning's own pytree helpers still use it, nothing a run can change",
    ),
    KnownWarning(
        r"Starting from v1\.9\.0, `tensorboardX` has been removed as a dependency",
        UserWarning,
        "Lightning's notice that `logger: true` means a CSVLogger; our runs read that metrics.csv",
    ),
    KnownWarning(
        r"Found \d+ module\(s\) in eval mode at the start of training",
        UserWarning,  # Lightning's PossibleUserWarning, a subclass
        "frozen parts (vision tower, base LLM, SD VAE/UNet/text encoder) stay in eval mode on purpose",
    ),
    PEFT_GRADIENT_CHECKPOINTING,
)


@contextmanager
def ignoring_warnings(known: Sequence[KnownWarning]) -> Iterator[None]:
    """The `known` warnings silenced inside the block only (the previous filters come back on exit)."""
    with warnings.catch_warnings():
        for warning in known:
            warnings.filterwarnings("ignore", message=warning.message, category=warning.category)
        yield

# Lightning logs its product tips ("💡 Tip: ... install litlogger / litmodels") at INFO through this logger.
LIGHTNING_RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"
LIGHTNING_TIP_PREFIX = "💡 Tip:"
# DeepSpeed announces, on import, that it found no GPU; said only where torch sees none either.
DEEPSPEED_LOGGER = "DeepSpeed"
DEEPSPEED_CPU_PREFIX = "Setting accelerator to CPU"


class _DropLines(logging.Filter):
    """Drops the records of one logger whose message starts with one of `prefixes`."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def _known_log_lines() -> dict[str, tuple[str, ...]]:
    """Logger name -> message prefixes dropped inside `quiet_training`."""
    import torch

    lines = {LIGHTNING_RANK_ZERO_LOGGER: (LIGHTNING_TIP_PREFIX,)}
    if not torch.cuda.is_available():  # with a GPU torch can use, DeepSpeed missing it is worth seeing
        lines[DEEPSPEED_LOGGER] = (DEEPSPEED_CPU_PREFIX,)
    return lines


@contextmanager
def quiet_training(known: Sequence[KnownWarning] = TRAINING_WARNINGS) -> Iterator[None]:
    """Run a Lightning fit/validate/test without the `known` warnings, Lightning's tips and DeepSpeed's CPU notice.

    Filters and the log filter live only inside the block (`warnings.catch_warnings` restores the
    previous filters), so callers that run training in-process, such as the demo and the tests, keep
    every other warning.
    """
    dropped = [(logging.getLogger(name), _DropLines(prefixes)) for name, prefixes in _known_log_lines().items()]
    with ignoring_warnings(known):
        for logger, line_filter in dropped:
            logger.addFilter(line_filter)
        try:
            yield
        finally:
            for logger, line_filter in dropped:
                logger.removeFilter(line_filter)


@contextmanager
def loggers_at_level(level: int, *names: str) -> Iterator[None]:
    """The named loggers show only records of `level` and above inside the block; their levels come back after."""
    loggers = [logging.getLogger(name) for name in names]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, previous, strict=True):
            logger.setLevel(old)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' warnings (such as LOAD REPORT tables) and progress bars off inside the block only.

    Use it around a call whose outcome the caller checks itself (see `from_pretrained_expecting`);
    the previous verbosity and progress-bar setting come back on exit, even on an error.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _outside(keys: Any, expected: tuple[str, ...]) -> list[str]:
    names = [key[0] if isinstance(key, tuple) else key for key in keys]  # mismatched keys come with shapes
    return sorted(str(name) for name in names if not str(name).startswith(expected))


def from_pretrained_expecting(
    load: Callable[..., Any], name_or_path: str, *, expected: tuple[str, ...] = (), **kwargs: Any
) -> Any:
    """`load(name_or_path, **kwargs)` (a `from_pretrained`) without the LOAD REPORT for keys we expect.

    `expected` holds key prefixes that may be unused, missing or re-initialised by design, e.g.
    `("classifier.",)` when an exported image classifier becomes a vision backbone (its head is dropped).
    Any other such key is logged as one warning naming the folder and the keys, so a wrong folder or a
    changed architecture still shows; load errors raise as before.
    """
    with quiet_transformers():
        model, info = load(name_or_path, output_loading_info=True, **kwargs)
    problems = {
        "not used": _outside(info.get("unexpected_keys", ()), expected),
        "missing (randomly initialised)": _outside(info.get("missing_keys", ()), expected),
        "of another shape (re-initialised)": _outside(info.get("mismatched_keys", ()), expected),
    }
    found = {what: keys for what, keys in problems.items() if keys}
    if found:
        details = "; ".join(
            f"{len(keys)} {what}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
            for what, keys in found.items()
        )
        log.warning("loading %s from %s: weights %s", type(model).__name__, name_or_path, details)
    return model


# Key prefixes a vision backbone leaves unused by design (`expected` of `from_pretrained_expecting`).
IMAGE_CLASSIFIER_HEAD = ("classifier.",)  # an image classifier (ours exported, or a hub ResNet/ViT) minus its head
CLIP_OUTSIDE_VISION_TOWER = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")
