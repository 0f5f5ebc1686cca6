"""Load a model and its processor through the Auto classes, choosing device, dtype and attention."""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.utils import logging as hf_logging

from .families import Family, family_class, family_for


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message is one sentence for the user."""


@dataclass
class LoadedModel:
    model_id: str
    revision: str
    model: torch.nn.Module
    processor: object
    family: Family
    device: str
    dtype: str
    attention: str


def pick_attention(device: str) -> str:
    """flash_attention_2 when flash_attn imports on a GPU, else SDPA."""
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_model(model_id: str, device: str | None = None, dtype: torch.dtype | None = None,
               revision: str | None = None) -> LoadedModel:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    attention = pick_attention(device)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # e.g. "falling back to the PIL image processor" without torchvision
    local = Path(model_id).expanduser()
    source = str(local) if local.exists() else model_id
    if not local.exists() and os.environ.get("HF_HUB_OFFLINE") == "1" and "/" not in model_id:
        raise ModelLoadError(f"Model {model_id!r} is neither a local folder nor a hub id.")
    try:
        pinned = {"revision": revision} if revision else {}
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, attn_implementation=attention,
                                                            **pinned)
        processor = load_processor(source, model, **pinned)
    except ModelLoadError:
        raise
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"Could not load model {model_id!r}: {reason[:300]}") from exc
    model.to(device).eval()
    revision = getattr(model.config, "_commit_hash", None) or _folder_revision(local)
    family = family_for(model, processor)
    return LoadedModel(model_id, revision, model, processor, family, device, str(dtype).replace("torch.", ""),
                       attention)


def load_processor(source: str, model, **pinned):
    """AutoProcessor, or where it cannot load offline (Qwen's video processors need torchvision) the family's
    processor built from its parts."""
    try:
        processor = AutoProcessor.from_pretrained(source, **pinned)
        if hasattr(processor, "image_processor"):
            return processor
    except Exception as exc:  # noqa: BLE001 - fall through to the family fallback below
        error = exc
    else:
        error = ValueError("AutoProcessor returned no image processor")
    try:
        family = family_class(model.config.model_type)
    except ValueError:  # not a supported family: family_for says so after loading
        family = None
    built = family.build_processor(source, **pinned) if family else None
    if built is not None:
        return built
    raise ModelLoadError(f"Could not load the processor of {source!r}: {error}")


def _folder_revision(folder: Path) -> str:
    """A content revision for a local folder: size and mtime of its weight files (cache key material)."""
    if not folder.exists():
        return "unknown"
    stats = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in folder.glob("*.safetensors"))
    return "local:" + ",".join(f"{n}:{s}:{t}" for n, s, t in stats)
