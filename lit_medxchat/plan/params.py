"""Parameter counts per part of a module (frozen vs trainable, bytes by dtype) and where LoRA landed.

Counts come from `named_parameters()` (tied weights once), so they equal what the built model holds;
on the meta device they cost nothing. Bytes use each tensor's dtype as built (frozen bf16, trainable fp32).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from torch import nn

from lit_medxchat.models.registry import MODEL_CORES

_INDEX = re.compile(r"\.(\d+)(?=\.)")
# Training wrappers hold their model's plain core as one attribute; parts are named inside the core.
_CORE_CLASS_NAMES = {target.split(":")[1] for target in MODEL_CORES.values()}


@dataclass
class PartCount:
    """One top-level part (e.g. `llm`, `adapter`, `unet`)."""

    name: str
    trainable: int = 0
    frozen: int = 0
    trainable_bytes: int = 0
    frozen_bytes: int = 0
    trainable_tensors: int = 0

    @property
    def total(self) -> int:
        return self.trainable + self.frozen


@dataclass
class ParamCounts:
    """All parts, the trainable tensors grouped by name pattern, and the largest single layer."""

    parts: list[PartCount]
    trainable_groups: dict[str, tuple[int, int, list[int]]] = field(default_factory=dict)
    lora_targets: dict[str, list[int]] = field(default_factory=dict)
    largest_layer: int = 0

    @property
    def trainable(self) -> int:
        return sum(p.trainable for p in self.parts)

    @property
    def frozen(self) -> int:
        return sum(p.frozen for p in self.parts)

    @property
    def total(self) -> int:
        return self.trainable + self.frozen

    @property
    def trainable_bytes(self) -> int:
        return sum(p.trainable_bytes for p in self.parts)

    @property
    def frozen_bytes(self) -> int:
        return sum(p.frozen_bytes for p in self.parts)

    @property
    def trainable_tensors(self) -> int:
        return sum(p.trainable_tensors for p in self.parts)


def _core_prefix(module: nn.Module) -> str:
    """`"model."` for a wrapper holding a registered core as `model` (its parts: `llm`, `adapter`, ...), else ''."""
    for name, child in module.named_children():
        if type(child).__name__ in _CORE_CLASS_NAMES:
            return f"{name}."
    return ""


def count_parameters(module: nn.Module) -> ParamCounts:
    """Per-part counts; trainable tensors grouped as `pattern -> (tensors, elements, layer indices)`."""
    parts: dict[str, PartCount] = {}
    groups: dict[str, list] = defaultdict(lambda: [0, 0, set()])
    lora: dict[str, set[int]] = defaultdict(set)
    core_prefix = _core_prefix(module)
    for name, param in module.named_parameters():
        name = name.removeprefix(core_prefix)
        part = parts.setdefault(name.split(".", 1)[0], PartCount(name.split(".", 1)[0]))
        nbytes = param.numel() * param.element_size()
        if param.requires_grad:
            part.trainable += param.numel()
            part.trainable_bytes += nbytes
            part.trainable_tensors += 1
            indices = [int(i) for i in _INDEX.findall(name)]
            group = groups[_INDEX.sub(".*", name)]
            group[0] += 1
            group[1] += param.numel()
            if indices:
                group[2].add(indices[0])
            if ".lora_A." in name:
                target = name.split(".lora_A.", 1)[0].rsplit(".", 1)[-1]
                lora[target].add(indices[0] if indices else -1)
        else:
            part.frozen += param.numel()
            part.frozen_bytes += nbytes
    largest = max(
        (sum(p.numel() for p in m.parameters(recurse=False)) for m in module.modules()), default=0
    )
    return ParamCounts(
        parts=list(parts.values()),
        trainable_groups={k: (v[0], v[1], sorted(v[2])) for k, v in groups.items()},
        lora_targets={k: sorted(v) for k, v in lora.items()},
        largest_layer=largest,
    )


def index_ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5' (layers a tensor pattern occurs in)."""
    if not indices:
        return "-"
    ranges, start, prev = [], indices[0], indices[0]
    for i in indices[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        ranges.append(f"{start}-{prev}" if prev > start else str(start))
        if i is not None:
            start = prev = i
    return ", ".join(ranges)
