"""One set of defaults: the settings, the presets, the shared arguments and build_methods (no model needed)."""
from __future__ import annotations

import argparse

import pytest

from explorer.limits import InputError, Limits
from explorer.methods import REGISTRY
from explorer.settings import (EVAL, PRESETS, SETTINGS, add_arguments, add_budget, build_methods, checked,
                               settings_from)


def test_every_preset_names_registered_methods():
    for name, preset in PRESETS.items():
        assert preset.methods and set(preset.methods) <= set(REGISTRY), name
        assert all(isinstance(k, int) and k > 0 for k in preset.budgets), name


def test_shared_settings_reach_only_the_methods_that_have_them():
    fastv, random, alpha = build_methods(["fastv", "random", "alpha"], SETTINGS)
    assert (fastv.keep, fastv.layer, fastv.convention, fastv.ranking) == (SETTINGS.keep, SETTINGS.layer,
                                                                         SETTINGS.convention, SETTINGS.ranking)
    assert random.seed == SETTINGS.seed and alpha.alpha == SETTINGS.alpha
    assert not hasattr(fastv, "alpha") and not hasattr(fastv, "seed")


def test_a_method_knob_overrides_the_shared_one():
    random, = build_methods(["random"], SETTINGS, {"random": {"seed": 7}, "fastv": {"query": "all"}})
    assert random.seed == 7  # knobs of methods not chosen are checked, not used


@pytest.mark.parametrize("knobs, message", [
    ({"fastv": {"nope": 1}}, "fastv has no knob 'nope'"),
    ({"nosuch": {}}, "unknown method 'nosuch'"),
    ({"fastv_window": {"windows": "two"}}, "whole number"),
])
def test_unknown_or_bad_knobs_are_refused_in_one_line(knobs, message):
    with pytest.raises(InputError, match=message) as exc:
        build_methods(["fastv"], SETTINGS, knobs)
    assert len(str(exc.value).splitlines()) == 1


def test_checked_names_the_value_and_keeps_good_ones():
    assert checked(SETTINGS) == SETTINGS
    with pytest.raises(InputError, match="Layer K must be between"):
        checked(SETTINGS.__class__(layer=-1))
    with pytest.raises(InputError, match="ranking must be one of"):
        checked(SETTINGS.__class__(ranking="rows"))
    with pytest.raises(InputError, match="seed must be between 0 and 5"):
        checked(SETTINGS.__class__(seed=9), Limits(max_seed=5))


def _parse(argv, base=SETTINGS):
    parser = argparse.ArgumentParser()
    add_budget(parser)
    add_arguments(parser, ("methods", "budget", "ranking", "layer", "max_new_tokens", "threads", "device"), base)
    return settings_from(parser.parse_args(argv), base)


def test_arguments_default_to_the_settings_and_set_them():
    assert _parse([]) == SETTINGS
    assert _parse([], EVAL).threads == EVAL.threads == 1
    s = _parse(["--ratio", "0.25", "--budget", "final", "--ranking", "per_grid", "--layer", "3", "--device", "cpu"])
    assert (s.keep, s.ratio, s.convention, s.ranking, s.layer, s.device) == (None, 0.25, "final", "per_grid", 3,
                                                                               "cpu")


def test_sweep_configs_carry_both_conventions():
    from explorer.eval.sweep import configs

    cfgs = configs(["vanilla", "fastv"], [8], convention="final", ranking="per_grid")
    method = cfgs[1].build()
    assert (method.convention, method.ranking, method.keep) == ("final", "per_grid", 8)
    assert cfgs[1].key.endswith("|final|per_grid")
    assert configs(["fastv"], [8])[0].key == "fastv|k8|aNone|L2|paper"  # older sweep folders still resume


def test_the_eval_command_line_takes_both_conventions(tmp_path, capsys):
    from explorer.eval.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--ranking", "rows", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--ranking" in err and len(err.strip().splitlines()) == 1
