"""The model card's pruning report: cell geometry, the concentration measure, and a real small run."""
from __future__ import annotations

import pytest

from explorer.engine import EMBEDDED_MODEL
from explorer.toy.pruned_report import concentration, markdown, object_cells, run


def test_object_cells_cover_the_box():
    assert object_cells([0.0, 0.0, 0.5, 0.5], (4, 4)) == {0, 1, 4, 5}
    assert object_cells([0.3, 0.3, 0.4, 0.4], (4, 4)) == {5}


def test_concentration_against_uniform_share():
    scores = [0.0] * 16
    for i in (0, 1, 4, 5):
        scores[i] = 1.0
    assert concentration(scores, {0, 1, 4, 5}) == (1.0, 0.25)


@pytest.mark.slow
def test_small_run_on_the_embedded_model():
    report = run(str(EMBEDDED_MODEL), seed=3, n=1)
    assert set(report["accuracy"]) == {"existence", "colour", "shape", "count", "grounding", "letter", "haystack"}
    row = report["accuracy"]["colour"]
    assert {"vanilla@576", "random@144", "fastv_window@64"} <= set(row)
    assert all(r["n"] == 1 and 0 <= r["acc"] <= 1 for r in row.values())
    assert "| task |" in markdown(report)
    assert {"colour", "grounding"} <= set(report["attention"]), "the asked-about objects' cells were measured"
    for a in report["attention"].values():
        assert a["samples"] >= 1 and 0 <= a["top25_in_object"] <= 1 and 0 < a["object_share_of_grid"] < 1


@pytest.mark.slow
def test_a_subset_of_tasks_runs_only_those():
    report = run(str(EMBEDDED_MODEL), seed=3, n=1, tasks=("colour",))
    assert set(report["accuracy"]) == {"colour"} and set(report["attention"]) <= {"colour"}
