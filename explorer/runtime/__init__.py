"""Applies a method inside a stock transformers forward pass: probe, cut, decode, timing, FLOPs."""


def pruner_for(family, model, method, layouts, prompt_len, fixed=None):
    """The runtime that applies `method`: one cut at layer K (Pruner), or several cuts / pre-LLM cuts / a KV
    cache cut (StagedPruner) for methods that declare `runtime = "staged"`."""
    from .pruner import Pruner
    from .staged import StagedPruner

    runner = StagedPruner if getattr(method, "runtime", "") == "staged" else Pruner
    return runner(family, model, method, layouts, prompt_len, fixed=fixed)
