"""Shared fixtures: tiny random-weight checkpoints of every family, loaded through the engine, 1 thread."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import BUILDERS, picture  # noqa: E402

from explorer.engine import Engine  # noqa: E402

torch.set_num_threads(1)


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


@pytest.fixture
def image() -> Image.Image:
    return picture()
