"""Shared fixtures: one phantom anatomy per session, cached where `--phantom` runs look for it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lit_medxchat.synth.anatomy import Anatomy, build_anatomy
from lit_medxchat.synth.ct_source import PHANTOM_KEY, anatomy_cache_path
from lit_medxchat.synth.phantom import build_phantom


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory) -> Path:
    """A private XDG cache holding the phantom anatomy, so CLI runs with --phantom skip building it."""
    root = tmp_path_factory.mktemp("xdg-cache")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(root)
    # The same phantom as `--phantom`, on coarser grids (3 mm volume, 4 mm findings grid) to keep tests fast.
    hu, labels, spacing = build_phantom(spacing_mm=3.0)
    build_anatomy(hu, labels, spacing, "phantom", coarse_spacing_mm=4.0).save(anatomy_cache_path(PHANTOM_KEY))
    yield root
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(scope="session")
def phantom(synth_cache) -> Anatomy:
    anatomy = Anatomy.load(anatomy_cache_path(PHANTOM_KEY))
    assert anatomy is not None
    return anatomy


@pytest.fixture(scope="session")
def dataset(synth_cache, tmp_path_factory) -> Path:
    """A small built-in dataset written by the CLI (phantom, 128 px), shared by the read-only tests."""
    from lit_medxchat.synth.cli import main

    out = tmp_path_factory.mktemp("synth") / "mimic"
    code = main(
        [
            "--out",
            str(out),
            "--num-subjects",
            "14",
            "--seed",
            "7",
            "--image-size",
            "128",
            "--phantom",
            "--no-progress",
            "--preview",
            str(out.parent / "preview.png"),
        ]
    )
    assert code == 0
    return out
