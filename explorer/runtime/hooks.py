"""The hooks one run installs, each with its role, removed together (kvpress `base_press.py` style).

A runtime registers every hook through a `HookSet` inside `try` and removes them in `finally`, so no hook
outlives its run even when a method raises half-way. Each hook says what it does:
- "observe": reads the module's inputs and returns None (probes, raters, timers) — the shared-prefix runner
  may feed it a recorded call instead of running the module again;
- "change": may replace the module's inputs or outputs (cuts, slicing of the per-call tensors, merges);
- "decode": changes only decode steps (one new token), by the runtime's `decode_offset` (a pre-LLM run's
  renumbered positions); the shared-prefix runner keeps it for the run's own decode steps and applies the offset
  itself when it decodes runs as one batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

ROLES = ("observe", "change", "decode")


@dataclass
class Hook:
    module: torch.nn.Module | None  # None: registered elsewhere (a family's hooks), module unknown
    fn: Callable | None
    kind: str  # "pre" (forward pre-hook) or "post" (forward hook)
    role: str  # "observe" or "change"
    with_kwargs: bool
    handle: object


class HookSet:
    """The hooks of one run, in registration order."""

    def __init__(self):
        self.hooks: list[Hook] = []

    def pre(self, module: torch.nn.Module, fn: Callable, role: str = "change", with_kwargs: bool = True) -> None:
        handle = module.register_forward_pre_hook(fn, with_kwargs=with_kwargs)
        self.hooks.append(Hook(module, fn, "pre", _role(role), with_kwargs, handle))

    def post(self, module: torch.nn.Module, fn: Callable, role: str = "change", with_kwargs: bool = True) -> None:
        handle = module.register_forward_hook(fn, with_kwargs=with_kwargs)
        self.hooks.append(Hook(module, fn, "post", _role(role), with_kwargs, handle))

    def adopt(self, handles: list) -> None:
        """Handles registered by someone else (a family's cut hooks): removed with ours, treated as changes."""
        self.hooks += [Hook(None, None, "post", "change", True, h) for h in handles]

    def remove(self) -> None:
        for hook in self.hooks:
            hook.handle.remove()
        self.hooks.clear()


def _role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"hook role must be one of {ROLES}, got {role!r}")
    return role
