"""Fixtures of the advanced-method tests: each family's tiny model (tests/conftest.py) with a prepared input."""
from __future__ import annotations

import pytest
from PIL import Image

from explorer.testing import BUILDERS, Lazy


@pytest.fixture(scope="session")
def tiny(engine, loaded):
    """family name -> (loaded model, prepared input) for a small red image and a question."""
    image = Image.new("RGB", (40, 30), (200, 10, 10))
    image.paste((10, 10, 220), (0, 0, 20, 15))
    return Lazy(lambda name: (loaded[name], engine.prepare(loaded[name], [image],
                                                             "what is the colour of the square ?")), BUILDERS)
