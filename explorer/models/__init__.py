"""Model families and loading: the only code that knows transformers' internals."""
from .families import Family, family_for
from .layout import ImageLayout, Segment
from .loading import LoadedModel, ModelLoadError, load_model

__all__ = ["Family", "family_for", "ImageLayout", "Segment", "LoadedModel", "ModelLoadError", "load_model"]
