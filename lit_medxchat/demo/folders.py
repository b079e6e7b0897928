"""Where a demo run keeps its data, runs and figures, all under one output folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DemoFolders:
    """The layout of `lit-medxchat demo --out OUT` (the report links figures relative to `out`)."""

    out: Path

    @property
    def tree(self) -> Path:
        """The rendered dataset, in the MIMIC-CXR-JPG layout."""
        return self.out / "data" / "mimic-cxr-jpg"

    @property
    def shards(self) -> Path:
        """The prepared WebDataset shards every model trains and is tested on."""
        return self.out / "data" / "shards"

    @property
    def runs(self) -> Path:
        """One `lit-medxchat fit` run folder per trained model."""
        return self.out / "runs"

    @property
    def figures(self) -> Path:
        return self.out / "figures"

