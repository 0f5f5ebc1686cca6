"""Shared fixtures: tiny random-weight checkpoints of every family, loaded through the engine, 1 thread."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import BUILDERS  # noqa: E402

from explorer.engine import Engine  # noqa: E402

torch.set_num_threads(1)
FAMILIES = list(BUILDERS)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {name: build(root / name) for name, build in BUILDERS.items()}


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine(threads=1)


@pytest.fixture(scope="session")
def loaded(engine, checkpoints):
    """family name -> LoadedModel (SDPA, fp32, CPU)."""
    return {name: engine.model(str(path)) for name, path in checkpoints.items()}


def picture(seed: int = 0, size=(64, 48)) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(size[1], size[0], 3) * 255).astype("uint8"))


@pytest.fixture
def image() -> Image.Image:
    return picture()
