"""Every rank's RNG states, saved with a checkpoint so a resume continues random ops exactly.

Lightning restores weights, optimizer, scheduler, loop counters and a stateful loader's position, but
not RNG states; without them dropout masks and noise draws after a resume differ from an uninterrupted
run. States are stored as tensors and plain Python values so checkpoints load with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

from typing import Any

RNG_KEY = "rng_states_per_rank"


def collect_rng_states() -> dict[str, Any]:
    """This process's RNG states: torch CPU, every CUDA device, numpy, Python `random`."""
    import random

    import numpy as np
    import torch

    # numpy's state as plain tensors/ints: checkpoints must load with torch.load(weights_only=True)
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                   "cached_gaussian": float(cached_gaussian)}
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Inverse of `collect_rng_states` (CUDA states only when this process has the same devices)."""
    import random

    import numpy as np
    import torch

    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def gather_rng_states(trainer: Any = None) -> list[dict[str, Any]]:
    """Every rank's RNG states, in rank order, on every rank (a collective: all ranks must call it).

    `trainer` is accepted for callers that pass it and is not used: the default process group is enough.
    """
    from lit_medxchat.core.distributed import gather_objects

    return gather_objects(collect_rng_states())
