"""Paths the UI tests share (a uniquely named module: `conftest` is ambiguous when all tests run together)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "assets" / "examples"
