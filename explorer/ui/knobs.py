"""Per-method knob controls generated from each method's dataclass fields (type and default; a field's
`metadata` may add "help", "range" and "choices"). They write the "Method knobs" JSON box, which stays the one
source the Compare handler and the API read (and an advanced option to type into). The shared settings (budget,
K, α, seed, budget convention, ranking) are page-level controls, not knobs here."""
from __future__ import annotations

import dataclasses
import json
import typing

import gradio as gr

from ..settings import SETTINGS

SHARED = set(SETTINGS.method_knobs())  # budget, K, α, seed, budget convention, ranking: the page's own controls


def knob_fields(cls) -> list[tuple[str, type, object, dict]]:
    """(name, type, default, metadata) of a method's own knobs."""
    hints = typing.get_type_hints(cls)
    return [(f.name, hints.get(f.name), f.default, dict(f.metadata)) for f in cls.knobs()
            if f.name not in SHARED and f.default is not dataclasses.MISSING]


def _tuple(hint) -> bool:
    return typing.get_origin(hint) is tuple


def control(method: str, name: str, hint, default, meta: dict):
    """One Gradio control for one knob: a number (whole or real, within its range if declared) or a text box."""
    lo, hi = meta.get("range", (None, None))
    common = dict(label=name, info=meta.get("help"), elem_id=f"knob-{method}-{name}", min_width=120)
    if meta.get("choices"):
        return gr.Dropdown(list(meta["choices"]), value=default, **common)
    if hint is int:
        return gr.Number(default, precision=0, minimum=lo, maximum=hi, **common)
    if hint is float:
        return gr.Number(default, minimum=lo, maximum=hi, **common)
    text = ", ".join(str(v) for v in default) if _tuple(hint) else str(default)
    return gr.Textbox(text, **common)


def _value(hint, raw):
    """A control's value as the JSON the knobs box takes (a tuple from "2, 6, 15"); text it cannot read is
    passed on as typed, for the Compare handler to refuse in one line."""
    if _tuple(hint) and isinstance(raw, str):
        try:
            return [int(v) for v in raw.replace(" ", "").split(",") if v]
        except ValueError:
            return raw
    return raw


def merged(text: str | None, specs: list[tuple[str, str, type, object]], values: list) -> str:
    """The knobs JSON with every control's knob set where it differs from its default (dropped where it does
    not); keys typed by hand for other methods or knobs are kept. Unreadable JSON is replaced."""
    try:
        knobs = json.loads(text) if text and text.strip() else {}
        knobs = knobs if isinstance(knobs, dict) else {}
    except json.JSONDecodeError:
        knobs = {}
    for (method, name, hint, default), raw in zip(specs, values):
        value, own = _value(hint, raw), knobs.get(method)
        own = dict(own) if isinstance(own, dict) else {}
        if value is None or value == (list(default) if _tuple(hint) else default):
            own.pop(name, None)
        else:
            own[name] = value
        knobs[method] = own
    return json.dumps({m: v for m, v in knobs.items() if v}) if any(knobs.values()) else ""


def knob_controls(registry, selected: list[str], methods_box, knobs_box) -> None:
    """Inside the current Blocks context: one group of controls per method with knobs (shown while the method
    is selected), each writing the knobs JSON box."""
    groups, specs, controls = {}, [], []
    for method, cls in registry.items():
        fields = knob_fields(cls)
        if not fields:
            continue
        with gr.Group(visible=method in selected) as groups[method]:
            gr.Markdown(f"**{cls.label}**")
            with gr.Row():
                for name, hint, default, meta in fields:
                    controls.append(control(method, name, hint, default, meta))
                    specs.append((method, name, hint, default))
    methods_box.change(lambda chosen: [gr.update(visible=m in (chosen or [])) for m in groups],
                       inputs=methods_box, outputs=list(groups.values()), api_visibility="private",
                       show_progress="hidden")
    gr.on([c.change for c in controls], lambda text, *values: merged(text, specs, list(values)),
          inputs=[knobs_box, *controls], outputs=knobs_box, api_visibility="private", show_progress="hidden")
