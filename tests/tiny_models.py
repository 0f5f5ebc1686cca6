"""Moved to explorer/testing.py; this re-export stays until every importer uses that module."""
from explorer.testing import *  # noqa: F401,F403
from explorer.testing import BUILDERS, FAMILIES, picture  # noqa: F401
