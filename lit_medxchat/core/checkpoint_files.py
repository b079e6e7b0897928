"""Reading checkpoint files without running code from them.

A `.ckpt` is a pickle: loaded with `weights_only=False`, a file from elsewhere can execute anything
while it is read (`chat`, `export`, the web chat and resume all read checkpoints users download or
share). Every read in the project goes through `load_checkpoint_file`, which lets torch's restricted
unpickler accept only tensors and plain Python types, and turns its refusal into a message that
says which object was refused and what to do. Our models store their hyper-parameters as plain types
for that reason (dataclass options are saved as dicts).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

_REFUSED_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL|global) ([\w.]+)")


class UnsafeCheckpointError(ValueError):
    """The file holds a pickled object other than tensors and plain types; it was not unpickled."""


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """The checkpoint's dict, read with `torch.load(weights_only=True)`.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file pickles a class or function (named in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        match = _REFUSED_GLOBAL.search(str(error))
        what = f"a pickled {match.group(1)}" if match else "a pickled object that is not plain data"
        raise UnsafeCheckpointError(
            f"checkpoint {path} holds {what}; lit-medxchat reads only tensors and plain types from checkpoints "
            "(loading arbitrary objects can run code from the file). Use a checkpoint written by lit-medxchat, "
            "or re-save this one's state_dict and hyper-parameters as plain types."
        ) from None
    if not isinstance(checkpoint, dict):
        raise UnsafeCheckpointError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint
