"""Config spellings of torch dtypes ("float32", "bfloat16", "float16"), checked in one place.

Configs name the dtype of frozen parts as a string (YAML has no torch types); every model resolves it
here so the accepted names and the error message are the same everywhere.
"""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, option: str = "frozen_dtype") -> torch.dtype:
    """The torch dtype a config names; `option` is the config field, named in the error."""
    if name not in DTYPES:
        raise ValueError(f"{option}={name!r} is not one of {sorted(DTYPES)}.")
    return DTYPES[name]
