"""Where each image's tokens sit in the sequence, and their grids: plain data shared by runtime and engine."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Segment:
    """A rectangular token grid inside one image's span (LLaVA-NeXT images have two)."""

    offset: int  # first token of the segment, relative to the image's first token
    grid: tuple[int, int]  # (h, w), row-major; h * w tokens
    name: str = "image"  # "image", "base" or "highres" (whose last column is LLaVA-NeXT's newline token)
    frame: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # area covered, fractions of the upload
    view_px: tuple[int, int] | None = None  # (width, height) of the resized image the tower saw (Qwen: pixels)

    @property
    def count(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def newlines(self) -> bool:
        """True when the grid's last column holds one newline token per row (LLaVA-NeXT's high-res grid)."""
        return self.name == "highres"

    def is_newline(self) -> "list[bool]":
        """Per segment index: is this token a newline token."""
        h, w = self.grid
        return [self.newlines and i % w == w - 1 for i in range(h * w)]


@dataclass(frozen=True)
class ImageLayout:
    """One image of the prompt: its token span [start, start + count) and its segments."""

    index: int
    start: int
    segments: tuple[Segment, ...] = field(default_factory=tuple)

    @property
    def count(self) -> int:
        return sum(s.count for s in self.segments)

    @property
    def grid(self) -> tuple[int, int]:
        """The grid a person sees: the single segment, or NeXT's base grid."""
        return self.segments[0].grid

    @property
    def last_patch(self) -> int:
        """Image index of the span's last patch token (NeXT's span ends with a newline token, not a patch)."""
        last = self.segments[-1]
        return last.offset + last.count - (2 if last.newlines else 1)


def split_runs(positions: list[int], counts: list[int]) -> list[int]:
    """Start of each image given the sorted positions of all image tokens and each image's token count."""
    if sum(counts) != len(positions):
        raise ValueError(f"processor produced {len(positions)} image tokens but the grids need {sum(counts)}")
    starts, at = [], 0
    for count in counts:
        span = positions[at: at + count]
        if span[-1] - span[0] != count - 1:
            raise ValueError("an image's tokens are not contiguous in the prompt")
        starts.append(span[0])
        at += count
    return starts
