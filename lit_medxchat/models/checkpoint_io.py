"""Checkpoint helpers shared by every model: save only what trains, load it back strictly.

A run at paper scale freezes a 7B LLM or an SD-1.5 UNet; writing those into every Lightning
checkpoint would cost gigabytes per save and nothing else. Checkpoints therefore hold the
trainable parameters (plus the buffers of modules that train, e.g. BatchNorm statistics), and a
load must find *exactly* the frozen keys missing: anything else means the checkpoint belongs to
another model or another configuration, and silently loading half of it would lose a run.

Random-weight backbones (tiny configs) are rebuilt from hyper-parameters, so their random init
must be reproducible: `seeded_init(seed)` draws it from a private RNG stream.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator, Mapping

import torch
from torch import nn

from lit_medxchat.models.zero3_build import gathered

_SHOWN_KEYS = 8  # how many offending keys an error message lists before "... and N more"


def trainable_keys(module: nn.Module) -> set[str]:
    """State-dict keys that a checkpoint of `module` must carry.

    That is every parameter with `requires_grad`, plus the persistent buffers of any submodule
    owning a trainable parameter (BatchNorm running statistics train with their module).
    """
    keys: set[str] = set()
    for module_name, submodule in module.named_modules():
        prefix = f"{module_name}." if module_name else ""
        direct_params = list(submodule.named_parameters(recurse=False))
        trains = False
        for name, param in direct_params:
            if param.requires_grad:
                keys.add(prefix + name)
                trains = True
        if trains:
            for name, _ in submodule.named_buffers(recurse=False):
                if name not in submodule._non_persistent_buffers_set:
                    keys.add(prefix + name)
    # Shared (tied) tensors appear once in state_dict under their first name; keep only real keys.
    return keys & set(module.state_dict().keys())


def frozen_keys(module: nn.Module) -> set[str]:
    """State-dict keys that are rebuilt from the backbone's source rather than saved."""
    return set(module.state_dict().keys()) - trainable_keys(module)


def filter_state_dict(state_dict: Mapping[str, torch.Tensor], keep: Iterable[str]) -> dict[str, torch.Tensor]:
    """The entries of `state_dict` whose key is in `keep`, in the original order."""
    keep = set(keep)
    return {key: value for key, value in state_dict.items() if key in keep}


def _show(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_SHOWN_KEYS])
    more = len(keys) - _SHOWN_KEYS
    return shown + (f" ... and {more} more" if more > 0 else "")


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's keys do not match the trainable part of the model it is loaded into."""


def check_trainable_keys(
    loaded: Iterable[str], expected_trainable: set[str], expected_frozen: set[str], source: str = "checkpoint"
) -> None:
    """Raise `CheckpointMismatchError` unless `loaded` holds every trainable key and nothing unknown.

    Frozen keys may be either all absent (a trainable-only checkpoint) or all present (a full
    state dict); a partial set of frozen keys means the checkpoint comes from another layout.
    """
    loaded = set(loaded)
    missing_trainable = expected_trainable - loaded
    unexpected = loaded - expected_trainable - expected_frozen
    present_frozen = loaded & expected_frozen
    problems = []
    if missing_trainable:
        problems.append(f"missing trainable keys: {_show(missing_trainable)}")
    if unexpected:
        problems.append(f"unexpected keys: {_show(unexpected)}")
    if present_frozen and present_frozen != expected_frozen:
        problems.append(
            f"only {len(present_frozen)} of {len(expected_frozen)} frozen keys present "
            f"(missing: {_show(expected_frozen - present_frozen)})"
        )
    if problems:
        raise CheckpointMismatchError(
            f"{source} does not match this model: "
            + "; ".join(problems)
            + ". Rebuild the model with the hyper-parameters the checkpoint was trained with "
            "(same backbone configs, LoRA/ControlNet options) or pick the matching checkpoint."
        )


def load_trainable_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"):
    """Load a trainable-only (or full) state dict into `module`, checking keys first.

    Returns the `nn.Module.load_state_dict` result; raises `CheckpointMismatchError` before
    touching any weight when keys do not match (see `check_trainable_keys`).
    """
    check_trainable_keys(state_dict.keys(), trainable_keys(module), frozen_keys(module), source)
    return nn.Module.load_state_dict(module, dict(state_dict), strict=False)


def state_fingerprint(state_dict: Mapping[str, torch.Tensor], keys: Iterable[str]) -> str:
    """A short hash of the named tensors' shapes and values.

    Stored with a trainable-only checkpoint so a load can tell when the frozen base it is
    rebuilt on differs from the one it was trained on (another hub revision, another init_seed).
    Float64 sums are one pass over the weights; the hash is computed once per run and cached.
    """
    digest = hashlib.sha256()
    for key in sorted(keys):
        tensor = state_dict[key]
        with gathered([tensor]):  # a ZeRO-3 parameter's values, not its empty local tensor (collective)
            digest.update(key.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            values = tensor.detach()
            if not values.is_floating_point():
                values = values.double()
            # float64 accumulation on the tensor's own device, without a float64 copy of a large tensor
            total = torch.sum(values, dtype=torch.float64).item()
            magnitude = torch.sum(values.abs(), dtype=torch.float64).item()
        digest.update(f"{total:.6e}|{magnitude:.6e}".encode())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Make random weight initialisation inside the block reproducible from `seed`.

    The global RNG state is restored on exit, so building a model does not shift the data
    order or dropout masks of the code that follows (important for exact resume).
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def cached_frozen_fingerprint(module: nn.Module) -> str:
    """`state_fingerprint` of `module`'s frozen weights, computed once per module (they do not train)."""
    cached = getattr(module, "_cached_frozen_fingerprint", None)
    if cached is None:
        # keep_vars: the parameters themselves, whose ZeRO-3 partition handle `state_fingerprint` gathers through
        cached = state_fingerprint(module.state_dict(keep_vars=True), frozen_keys(module))
        module._cached_frozen_fingerprint = cached
    return cached


def warn_if_frozen_base_changed(
    saved: str | None,
    current: str,
    check: str = "the backbone's name_or_path, revision, init_seed and frozen_dtype",
    stacklevel: int = 2,
) -> None:
    """Warn when a checkpoint's frozen-base fingerprint is not the loading model's (`check`: what to look at).

    The checkpoint holds only trainable weights, so loading it onto another base succeeds silently;
    this warning is the one sign. Checkpoints without a fingerprint (`saved` None) are not checked.
    """
    if saved is not None and saved != current:
        import warnings

        warnings.warn(
            "the frozen base weights differ from those the checkpoint was trained on "
            f"(fingerprint {saved} vs {current}): check {check}",
            stacklevel=stacklevel + 1,
        )


class TrainableOnlyCheckpoint:
    """LightningModule mixin: checkpoints carry trainable weights only; loads check keys strictly.

    Put it first in the bases (`class M(TrainableOnlyCheckpoint, LightningModule)`). Both
    `Trainer.fit(ckpt_path=...)` and `M.load_from_checkpoint(...)` end in `load_state_dict`,
    which is where the key check lives, so resume and export share one rule. The checkpoint
    also records the module's import path (`module_class`) so `lit-medxchat export` can rebuild
    the right class, and a fingerprint of the frozen base to warn when it changed.
    """

    def _frozen_fingerprint(self) -> str:
        return cached_frozen_fingerprint(self)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = filter_state_dict(checkpoint["state_dict"], trainable_keys(self))
        checkpoint["module_class"] = f"{type(self).__module__}.{type(self).__qualname__}"
        checkpoint["frozen_fingerprint"] = self._frozen_fingerprint()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        warn_if_frozen_base_changed(checkpoint.get("frozen_fingerprint"), self._frozen_fingerprint())

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False):
        # `strict` is ignored on purpose: the key check below is stricter than torch's for
        # trainable-only checkpoints, and `strict=False` must never hide a mismatch.
        check_trainable_keys(state_dict.keys(), trainable_keys(self), frozen_keys(self), type(self).__name__)
        return nn.Module.load_state_dict(self, dict(state_dict), strict=False, assign=assign)
