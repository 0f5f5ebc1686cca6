"""The method registry: every pruning method by its name. Adding a method = one file + one line here."""
from .alpha import AlphaBlend
from .avgpool import AvgPool
from .base import CONVENTIONS, RANKINGS, Method, MethodError, NotApplicable, SegmentView, Selection
from .knobs import knob
from .scored import ScoredMethod
from .cdpruner import CDPruner
from .dart import Dart
from .divprune import DivPrune
from .downsample import Downsample
from .fastv import FastV
from .fastv_reverse import FastVReverse
from .fastv_vis import FastVVis
from .fastv_window import FastVWindow
from .fastervlm import FasterVLM
from .mustdrop import MustDrop
from .pooling import Pooling
from .random_choice import RandomChoice
from .sparsevlm import SparseVLM
from .vanilla import Vanilla
from .visionzip import VisionZip
from .vispruner import VisPruner

REGISTRY: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (Vanilla, RandomChoice, Pooling, AvgPool, FastV, FastVReverse, FastVWindow, FastVVis, AlphaBlend,
                Dart, DivPrune, FasterVLM, VisionZip, SparseVLM, MustDrop, CDPruner, VisPruner, Downsample)
}


def make(name: str, **knobs) -> Method:
    """Build a method by registry name from its knobs (None = the knob's default); a knob it lacks is refused."""
    if name not in REGISTRY:
        raise MethodError(f"unknown method {name!r}; known: {', '.join(REGISTRY)}")
    cls = REGISTRY[name]
    names = [f.name for f in cls.knobs()]
    unknown = [key for key in knobs if key not in names]
    if unknown:
        raise MethodError(f"{name} has no knob {unknown[0]!r}; it has {', '.join(names)}")
    return cls(**{key: value for key, value in knobs.items() if value is not None})


__all__ = ["CONVENTIONS", "RANKINGS", "REGISTRY", "Method", "MethodError", "NotApplicable", "ScoredMethod",
           "SegmentView", "Selection", "knob", "make"]
