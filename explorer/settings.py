"""Every default in one place: the shared settings, the named method presets, the command-line arguments that
set them (`explorer run`, `explorer.eval`, `app.py`) and `build_methods`, which turns names + settings + per-method
knobs into Method objects for every entry point (CLI, web page and API, sweeps).

A knob a method declares itself (FastV's `query`, SparseVLM's `layers`, ...) has its default, help and range on
its field in explorer/methods/; the shared knobs below apply to every method that has them.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass

from .limits import InputError, Limits, knob_values, method_names, real, whole
from .methods import CONVENTIONS, RANKINGS, REGISTRY, Method
from .methods.alpha import AlphaBlend
from .methods.random_choice import RandomChoice


@dataclass(frozen=True)
class Settings:
    """The shared settings of one run; the entry points start from `SETTINGS` and replace what the user set."""

    keep: int | None = 64  # image tokens kept per image (the budget); None with a ratio
    ratio: float | None = None  # instead of keep: the fraction of each image's tokens kept
    layer: int = Method.layer  # K: the decoder layer whose input is cut (attention scores from K-1)
    alpha: float = AlphaBlend.alpha  # the α blend's weight on attention (Eq. 6): 1 = FastV, 0 = uniqueness only
    seed: int = RandomChoice.seed  # the random method's seed (sweeps offset it per sample)
    convention: str = Method.convention  # what keep means: "paper" (each method as its authors) or "final" (exact)
    ranking: str = Method.ranking  # images of several grids (LLaVA-NeXT, OneVision): "authors" or "per_grid"
    max_new_tokens: int = 32  # answer tokens generated at most (a real model's box answer needs ~20)
    repeats: int = 1  # timed repeats per method; the median is reported
    threads: int | None = None  # torch CPU threads; None: torch's default (all cores)
    device: str | None = None  # "cpu", "cuda", "cuda:1" ...; None: cuda when available, else cpu

    def method_knobs(self) -> dict:
        """The shared knobs a method may have (budget, K, α, seed, conventions)."""
        return {k: getattr(self, k) for k in ("keep", "ratio", "layer", "alpha", "seed", "convention", "ranking")}


SETTINGS = Settings()
EVAL = dataclasses.replace(SETTINGS, threads=1)  # sweeps and reports: one fixed thread count, comparable timings


@dataclass(frozen=True)
class Preset:
    """A named choice of methods (and budgets, for sweeps)."""

    methods: tuple[str, ...]
    budgets: tuple[int, ...] = (SETTINGS.keep,)
    task: str | None = None  # sweeps: the task
    samples: int | None = None  # sweeps: docs per task


PRESETS = {
    # the web page's first view: the reference, FastV and the two variants the paper proposes
    "app": Preset(("vanilla", "fastv", "fastv_window", "alpha")),
    # `python -m explorer run`: the paper's Algorithms 1-4 and Eq. 6
    "cli": Preset(("vanilla", "random", "pooling", "fastv", "fastv_reverse", "fastv_window", "fastv_vis", "alpha")),
    # `python -m explorer.eval sweep`: Table 1's baselines at its two budgets
    "sweep": Preset(("vanilla", "random", "pooling", "fastv", "fastv_window", "fastv_reverse"), (144, 64), "pope"),
    # the web page's Analysis tab: a task and budgets where the methods differ on the embedded model, so the first
    # report says something. Measured 2026-12-03 on the shipped toy-llava through the /analysis endpoint (toy data
    # seed 0, K = 2, budget convention "paper"): VQA exact match, vanilla 80; at 64 / 16 tokens random 70 / 70,
    # pooling 60 / 65, FastV 75 / 75, FasterVLM 70 / 40, DivPrune 80 / 60 (POPE: 100 for vanilla, random, pooling,
    # FastV and Window FastV at 64 and 16, so it says nothing). Re-measure after retraining the toy model:
    #   python -m explorer.eval sweep --task vqa,pope --methods vanilla,random,pooling,fastv,fastervlm,divprune \
    #       --keep 64,16 --limit 20 --out /tmp/analysis-defaults
    "analysis": Preset(("vanilla", "random", "pooling", "fastv", "fastervlm", "divprune"), (64, 16), "vqa", 20),
    # `explorer.eval paper`: Table 1 (also Tables 2, 5, Figure 2), Table 4's α sweep, Table 3's language guidance
    "table1": Preset(("vanilla", "random", "pooling", "fastv_window", "fastv", "fastv_reverse", "sparsevlm"),
                     (144, 64)),
    "alpha": Preset(("vanilla",), (64,)),
    "guidance": Preset(("vanilla", "sparsevlm", "fastv", "fastv_vis", "random"), (128,)),
    # the toy model's card: `python -m explorer.toy.pruned_report`
    "toy_report": Preset(("random", "pooling", "fastv", "fastv_window"), (144, 64)),
    # benchmarks/engine_latency.py
    "benchmark": Preset(("vanilla", "random", "pooling", "fastv", "fastv_window", "fastv_vis", "alpha")),
}


def preset(name: str) -> list[str]:
    """The registered methods of a preset, in order."""
    return [m for m in PRESETS[name].methods if m in REGISTRY]


LABELS = {"layer": "Layer K", "alpha": "α", "seed": "The seed", "max_new_tokens": "Max new tokens",
          "repeats": "Repeats", "threads": "Threads", "convention": "The budget convention", "ranking": "The ranking"}
FLAGS = {"layer": "--layer", "alpha": "--alpha", "seed": "--seed", "max_new_tokens": "--max-new-tokens",
         "repeats": "--repeats", "threads": "--threads", "convention": "--budget", "ranking": "--ranking"}


def checked(settings: Settings, limits: Limits | None = None, labels: dict = LABELS) -> Settings:
    """`settings` with every value within `limits`; an InputError naming the value by `labels` otherwise."""
    limits = limits or Limits()
    s = settings
    for name, choices in (("convention", CONVENTIONS), ("ranking", RANKINGS)):
        if getattr(s, name) not in choices:
            raise InputError(f"{labels[name]} must be one of: {', '.join(choices)}.")
    return dataclasses.replace(
        s, layer=whole(s.layer, labels["layer"], 0, 10**4), alpha=real(s.alpha, labels["alpha"], 0, 1),
        seed=whole(s.seed, labels["seed"], 0, limits.max_seed),
        max_new_tokens=whole(s.max_new_tokens, labels["max_new_tokens"], 1, limits.max_new_tokens),
        repeats=whole(s.repeats, labels["repeats"], 1, limits.max_repeats),
        threads=None if s.threads is None else whole(s.threads, labels["threads"], 1, 1024))


def build_methods(names, settings: Settings = SETTINGS, knobs: dict | None = None,
                  limits: Limits | None = None) -> list[Method]:
    """One Method per distinct name: the shared settings where the method has that knob, then its own `knobs`
    ({method: {knob: value}}, checked against the field's type and declared range). An unknown method, or a
    knob the method does not have, is refused in one line."""
    limits = limits or Limits()
    names = method_names(names, limits, REGISTRY)
    knobs = knobs or {}
    unknown = [m for m in knobs if m not in REGISTRY]
    if unknown:
        raise InputError(f"Method knobs: unknown method {str(unknown[0])[:40]!r}; known: {', '.join(REGISTRY)}.")
    own = {m: knob_values(REGISTRY[m], values or {}, limits) for m, values in knobs.items()}  # all checked
    shared = settings.method_knobs()
    out = []
    for name in names:
        cls = REGISTRY[name]
        fields = {f.name for f in cls.knobs()}
        out.append(cls(**{**{k: v for k, v in shared.items() if k in fields and v is not None}, **own.get(name, {})}))
    return out


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line and exits with code 2."""

    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _arguments(s: Settings, methods: str) -> dict[str, tuple[tuple[str, ...], dict]]:
    """(flags, argparse keywords) of every shared argument, defaults from `s` and the preset `methods`."""
    return {
        "model": (("--model",), dict(default=None, help="hub id or local folder (default: the embedded model)")),
        "methods": (("--methods",), dict(default=",".join(preset(methods)),
                                         help=f"comma-separated; known: {','.join(REGISTRY)}")),
        "layer": (("--layer",), dict(type=int, default=s.layer,
                                     help=f"layer K where the cut happens (default {s.layer})")),
        "alpha": (("--alpha",), dict(type=float, default=s.alpha, help=f"α of the α blend (default {s.alpha:g})")),
        "seed": (("--seed",), dict(type=int, default=s.seed, help=f"random method's seed (default {s.seed})")),
        "budget": (("--budget",), dict(choices=CONVENTIONS, default=s.convention, dest="convention", help=(
            "budget convention: 'paper' = each method's budget as its authors' code sets it for the setting --keep "
            "names (SparseVLM's per-layer lists, DART's pivots + 8-multiple, VisionZip's [CLS]); 'final' = exactly "
            f"--keep tokens after the last cut (default: {s.convention})"))),
        "ranking": (("--ranking",), dict(choices=RANKINGS, default=s.ranking, help=(
            "images of several grids (LLaVA-NeXT, OneVision): 'authors' = rank the image span as each method's "
            "authors do (one ranking over base + high-res grids, or per vision tile, newlines dropped); "
            f"'per_grid' = each grid on its own, budget split by size (default: {s.ranking})"))),
        "max_new_tokens": (("--max-new-tokens",), dict(type=int, default=s.max_new_tokens,
                                                       help=f"answer tokens at most (default {s.max_new_tokens})")),
        "repeats": (("--repeats",), dict(type=int, default=s.repeats,
                                         help="timed repeats per method (median reported)")),
        "threads": (("--threads",), dict(type=int, default=s.threads, help=(
            f"torch CPU threads (default {s.threads or 'torch: all cores'})"))),
        "device": (("--device",), dict(default=s.device, help="cpu, cuda, cuda:1 ... (default: cuda if available)")),
    }


def add_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...], settings: Settings = SETTINGS,
                  methods: str = "cli") -> None:
    """Add the named shared arguments to `parser` (`methods`: the preset --methods defaults to)."""
    table = _arguments(settings, methods)
    for name in names:
        flags, kwargs = table[name]
        parser.add_argument(*flags, **kwargs)


def add_budget(parser: argparse.ArgumentParser, settings: Settings = SETTINGS) -> None:
    """--keep N or --ratio R (one of them) for a single run."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--keep", type=int, help=f"image tokens to keep per image (default {settings.keep})")
    group.add_argument("--ratio", type=float, help="fraction of each image's tokens to keep")


def settings_from(args: argparse.Namespace, base: Settings = SETTINGS, limits: Limits | None = None) -> Settings:
    """The settings a parsed command line sets (fields it has no argument for keep `base`'s), checked against
    `limits` with the flags' names in messages."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)
              if f.name not in ("keep", "ratio") and hasattr(args, f.name)}
    if getattr(args, "keep", None) is not None or getattr(args, "ratio", None) is not None:
        values.update(keep=args.keep, ratio=args.ratio)
    return checked(dataclasses.replace(base, **values), limits, FLAGS)
