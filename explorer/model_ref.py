"""Which model a request names: its resolved identity (real folder, or hub id + revision) and the public
allow-list a shared deployment offers (the embedded model, configured hub ids, folders the operator named).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .models import ModelLoadError

EMBEDDED_MODEL = Path(__file__).resolve().parent.parent / "assets" / "toy-llava"
EMBEDDED_NAME = "embedded:toy-llava"  # the embedded model's public name (no server path)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
NEUTRAL = "That model is not offered here; choose one from the model list."


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: `source` is what the loader gets (a real path or a hub id)."""

    source: str
    revision: str | None = None  # hub revision (branch, tag or commit); None = the default branch

    @property
    def key(self) -> tuple[str, str | None]:
        return self.source, self.revision

    @property
    def name(self) -> str:
        return self.source + (f"@{self.revision}" if self.revision else "")


def resolve(spec: str) -> ModelRef:
    """An existing folder by its real path, `org/name[@revision]` as a hub id; anything else is a missing folder."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelLoadError("No model named.")
    spec = spec.strip()
    if spec == EMBEDDED_NAME:
        spec = str(EMBEDDED_MODEL)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ModelRef(os.path.realpath(path))
    repo, _, revision = spec.partition("@")
    if HUB_ID.match(repo) and ".." not in repo and not path.exists() and re.fullmatch(r"[\w./-]*", revision):
        return ModelRef(repo, revision or None)
    if path.exists():
        raise ModelLoadError(f"Model {spec!r} is a file, not a model folder.")
    raise ModelLoadError(f"Model folder not found: {spec!r}.")


class AllowList:
    """Public model names -> model specs. With `free_form` (a private box) any name resolves as itself.

    Names outside the list get one neutral sentence, without looking at the file system.
    """

    def __init__(self, models: dict[str, str], free_form: bool = False):
        self.models, self.free_form = dict(models), free_form

    @classmethod
    def build(cls, default: str, hub_ids: list[str], folders: list[str] = (), free_form: bool = False) -> AllowList:
        """The default model, configured hub ids and operator-named folders, each under a public name."""
        models = {}
        for spec in [default, *hub_ids, *folders]:
            name = public_name(spec)
            if name in models and _source(models[name]) != _source(spec):
                raise ModelLoadError(f"Two allowed models share the public name {name!r}; rename one of "
                                     "the folders.")
            models.setdefault(name, spec)
        return cls(models, free_form)

    def spec(self, name: str | None) -> str:
        """The spec to load for a requested public name (or, free-form, for any string)."""
        name = (name or "").strip()
        if name in self.models:
            return self.models[name]
        if self.free_form and name:
            return name
        raise ModelLoadError(NEUTRAL)

    def choices(self) -> list[tuple[str, str]]:
        """(label, value) pairs for a dropdown: public names only."""
        return [(_label(name), name) for name in self.models]


def public_name(spec: str) -> str:
    """A name that reveals no server path: the embedded model's name, a hub id, or a folder's base name."""
    try:
        ref = resolve(spec)
    except ModelLoadError:
        return spec
    if ref.source == os.path.realpath(EMBEDDED_MODEL):
        return EMBEDDED_NAME
    if os.path.isabs(ref.source):
        return "local:" + Path(ref.source).name
    return ref.name


def _source(spec: str) -> str:
    try:
        return resolve(spec).source
    except ModelLoadError:
        return spec


def _label(name: str) -> str:
    return "embedded toy model (offline)" if name == EMBEDDED_NAME else name
