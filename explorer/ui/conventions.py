"""The two page-level conventions, each one control with its explanation written once: what the budget means
(`paper` / `final`) and how an image of several grids is ranked (`authors` / `per_grid`). Defaults: settings."""
from __future__ import annotations

import gradio as gr

from ..settings import SETTINGS

BUDGET_INFO = ("paper: each method's budget as its authors' code sets it for this setting (SparseVLM's per-layer "
               "lists, DART's 8-multiple, VisionZip's [CLS]); final: exactly the budget after each method's last cut")
RANKING_INFO = ("Only for images of several grids (LLaVA-NeXT, LLaVA-OneVision: base grid + high-res grid); other "
                "models have one grid per image and ignore it. authors: rank the image span as each method's "
                "authors do (one ranking over both grids, or per tile for FasterVLM); per grid: each grid on its "
                "own, the budget split by size")


def budget_radio(elem_id: str, info: bool = True) -> gr.Radio:
    return gr.Radio([("as the authors (paper)", "paper"), ("exactly the budget (final)", "final")],
                    value=SETTINGS.convention, label="Budget convention", elem_id=elem_id,
                    info=BUDGET_INFO if info else None)


def ranking_radio(elem_id: str) -> gr.Radio:
    return gr.Radio([("as the authors", "authors"), ("per grid", "per_grid")], value=SETTINGS.ranking,
                    label="Ranking of multi-grid images (LLaVA-NeXT / OneVision only)", elem_id=elem_id,
                    info=RANKING_INFO)
