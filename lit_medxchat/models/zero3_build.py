"""Building frozen bases straight into ZeRO-3 partitions, so no rank holds a whole 7B model in host RAM.

`ZeroStrategy` (stage 3) opens `zero3_build(config)` around the LightningModule's `configure_model`;
a model that builds its frozen parts through `build_frozen` then gets them partitioned across ranks as
they load, and reads their weights at build time through `gathered`. Everything else (LoRA, adapters,
token rows: small and trainable) is built whole and partitioned by the DeepSpeed engine afterwards, as
before. Why not DeepSpeed's global `zero.Init` around the whole hook (what Lightning's stock strategy
does): inside it every module is partitioned at construction, so peft's LoRA initialisation and any
build step that reads a weight would run on empty tensors (LoRA's B would not start at zero).

Pretrained bases load through transformers' own ZeRO-3 path (an `HfDeepSpeedConfig` alive for the
call: each module is gathered in turn, filled on rank 0 and re-partitioned). Random bases (test and
demo sizes, built from a config) are built whole and then partitioned, so that their weights equal
any other build under the same seed: a single-process validation or `chat` of a ZeRO-3 checkpoint
rebuilds the same frozen base.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

import torch
from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)

_ACTIVE_CONFIG: ContextVar[dict[str, Any] | None] = ContextVar("lit_medxchat_zero3_build", default=None)
_DEFERRED: ContextVar[bool] = ContextVar("lit_medxchat_deferred_builds", default=False)


@contextlib.contextmanager
def deferred_builds() -> Iterator[None]:
    """Modules constructed in the block leave their model to `configure_model` (which the Trainer calls inside
    the strategy's build context). `lit-medxchat fit|validate|test` constructs its model in this block; a module
    made anywhere else builds at once, so that it is whole the moment it exists."""
    with _bound(_DEFERRED, True):
        yield


def builds_deferred() -> bool:
    """True inside `deferred_builds()`."""
    return _DEFERRED.get()


@contextlib.contextmanager
def zero3_build(config: dict[str, Any] | None) -> Iterator[None]:
    """Inside the block, `build_frozen` partitions what it builds under the DeepSpeed `config` (None: whole)."""
    with _bound(_ACTIVE_CONFIG, config):
        yield


def partitioning_active() -> bool:
    """True inside `zero3_build(config)` with a config: frozen bases are being built partitioned."""
    return _ACTIVE_CONFIG.get() is not None


def build_frozen(build: Callable[[], ModuleT], *, pretrained: bool) -> ModuleT:
    """`build()`, its parameters partitioned across ranks when a ZeRO-3 build is active.

    `pretrained`: the callable loads weights with transformers' `from_pretrained` (they then load into
    partitions, never whole on a rank); otherwise it draws random weights, built whole then partitioned.
    """
    config = _ACTIVE_CONFIG.get()
    if config is None:
        return build()
    import deepspeed

    if pretrained:
        with _transformers_zero3(config):
            module = build()
    else:
        module = build()
    # Pretrained: what transformers left whole (a wrapper's own parameters); random: everything.
    # mem_efficient_linear=False: with a module given, DeepSpeed would otherwise replace F.linear process-wide.
    deepspeed.zero.Init(module=module, config_dict_or_path=config, mem_efficient_linear=False)
    return module


@contextlib.contextmanager
def gathered(parameters: Iterable[torch.Tensor]) -> Iterator[None]:
    """The full values of any partitioned `parameters` for the block, for reading (changes are not kept).

    A collective when something is partitioned: every rank must enter it with the same parameters.
    """
    partitioned = list({id(p): p for p in parameters if is_partitioned(p)}.values())  # tied weights once
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
        yield


def is_partitioned(parameter: torch.Tensor) -> bool:
    """True for a ZeRO-3 parameter (its values live in per-rank partitions, the tensor itself is empty)."""
    return getattr(parameter, "ds_id", None) is not None


def built_parameter_bytes(module: nn.Module) -> dict[str, int]:
    """What this rank holds of `module`'s parameters right after a build, in bytes: `frozen_local` (a partitioned
    parameter counts its partition), `frozen_whole` (every frozen parameter at full size) and `trainable` (built
    whole; the engine partitions it later). Logged by models built under ZeRO-3, checked by the cluster rehearsal."""
    counts = {"frozen_local": 0, "frozen_whole": 0, "trainable": 0}
    for parameter in module.parameters():
        size = parameter.element_size()
        if parameter.requires_grad:
            counts["trainable"] += parameter.numel() * size
        elif is_partitioned(parameter):
            counts["frozen_local"] += parameter.ds_tensor.numel() * size
            counts["frozen_whole"] += parameter.ds_numel * size
        else:
            counts["frozen_local"] += parameter.numel() * size
            counts["frozen_whole"] += parameter.numel() * size
    return counts


@contextlib.contextmanager
def _bound(variable: ContextVar, value: Any) -> Iterator[None]:
    """`variable` set to `value` for the block, its previous value back after."""
    token = variable.set(value)
    try:
        yield
    finally:
        variable.reset(token)


@contextlib.contextmanager
def _transformers_zero3(config: dict[str, Any]) -> Iterator[None]:
    """transformers' `from_pretrained` / `resize_token_embeddings` see ZeRO-3 while the block runs.

    transformers finds the config through a weak reference to an `HfDeepSpeedConfig`: the object is held
    here for the block and the reference cleared after it, so peft (which also reads it, with a CUDA-only
    code path) and later builds see no ZeRO-3.
    """
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config

    holder = HfDeepSpeedConfig(config)
    try:
        yield
    finally:
        unset_hf_deepspeed_config()
        del holder
