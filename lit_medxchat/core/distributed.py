"""Which process am I, how many are there, and what do the others hold: object collectives.

The metric callbacks, the classifiers' epoch AUROC, the shard loader's resume state and the
checkpointing all gather small Python objects across ranks; one copy of the helpers lives here so
each layer above can use it without importing Lightning. Without an initialised process group every
helper behaves as a world of one.
"""

from __future__ import annotations

from typing import Any

import torch


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return torch.distributed.get_world_size() if _distributed() else 1


def global_rank() -> int:
    """This process's rank in the default group (0 when not distributed)."""
    return torch.distributed.get_rank() if _distributed() else 0


def _to_cpu(obj: Any) -> Any:
    """Tensors to CPU (anywhere in lists/tuples/dicts) so gathering never ships device memory."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order, on every rank (``[obj]`` without a process group).

    Uses ``all_gather_object`` (pickling), so ranks may hold different amounts of data.
    """
    obj = _to_cpu(obj)
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def gather_lists(items: list[Any]) -> list[Any]:
    """Concatenation of every rank's list, rank 0's items first."""
    return [item for part in gather_objects(items) for item in part]


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj if global_rank() == src else None]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def parameters_partitioned(module: torch.nn.Module) -> bool:
    """True when `module`'s parameters are split across ranks (DeepSpeed ZeRO-3 marks them with `ds_id`).

    Then every forward all-gathers parameters, so all ranks must run the same forwards in step: a rank
    that stops decoding early leaves the others waiting in an all-gather for ever.
    """
    return world_size() > 1 and any(hasattr(parameter, "ds_id") for parameter in module.parameters())


def all_ranks_true(flag: bool, device: torch.device | str = "cpu") -> bool:
    """`flag` and-ed over every rank (``flag`` itself without a process group); every rank must call it."""
    if world_size() == 1:
        return bool(flag)
    value = torch.tensor([0.0 if flag else 1.0], device=device)
    torch.distributed.all_reduce(value)
    return float(value.item()) == 0.0
