"""Budget/α re-selection from a run's reported scores equals a fresh run's kept set (no rule of its own)."""
from __future__ import annotations

from explorer.testing import picture

from explorer.methods import make
from explorer.ui.reselect import reselect

PROMPT = "what is the colour of the shape ?"
SCORED = ("fastv", "fastv_vis", "fastv_reverse", "alpha")


def test_reselection_equals_a_fresh_run(engine, loaded):
    lm = loaded["llava"]
    ran = engine.compare([picture(2)], PROMPT, [make(n, keep=9) for n in (*SCORED, "random")],
                         model_id=lm.model_id, max_new_tokens=2)
    again = reselect(ran, alpha=0.2, keep=4, ratio=None)
    fresh = engine.compare([picture(2)], PROMPT, [make(n, keep=4, **({"alpha": 0.2} if n == "alpha" else {}))
                                                  for n in (*SCORED, "random")],
                           model_id=lm.model_id, max_new_tokens=2)
    for a, b in zip(again["results"], fresh["results"]):
        if a["method"] == "random":
            assert "Cannot re-select" in a["stale"]
            continue
        assert a["config"] == b["config"], a["method"]
        assert [i["kept"] for i in a["images"]] == [i["kept"] for i in b["images"]], a["method"]
    back = reselect(again, alpha=0.5, keep=9, ratio=None)
    assert [r["images"] for r in back["results"]] == [r["images"] for r in ran["results"]]
