"""Shared fixtures: tiny random-weight checkpoints of every family (each built at most once per test run, when a
test first asks for it), one engine (1 thread) and the models loaded through it."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from explorer.engine import Engine
from explorer.limits import Limits
from explorer.testing import BUILDERS, Lazy, picture

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict:
    """family name -> folder of its tiny checkpoint (built on first use, once per run)."""
    root = tmp_path_factory.mktemp("tiny")
    return Lazy(lambda name: BUILDERS[name](root / name), BUILDERS)


@pytest.fixture(scope="session")
def engine() -> Engine:
    """One engine for the session, keeping every tiny family loaded (so `loaded`'s objects are the engine's)."""
    return Engine(threads=1, limits=Limits(max_models=len(BUILDERS) + 2))


@pytest.fixture(scope="session")
def loaded(engine, checkpoints):
    """family name -> LoadedModel (SDPA, fp32, CPU)."""
    return Lazy(lambda name: engine.model(str(checkpoints[name])), BUILDERS)


@pytest.fixture
def image() -> Image.Image:
    return picture()
