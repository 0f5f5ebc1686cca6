"""The CLI contract: JSON schema, readable table, one-line errors with exit code 2."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from explorer.testing import picture

from explorer.cli import main

RESULT_KEYS = {"method", "config", "images", "answer", "boxes", "tokens", "timings", "kv_cache_bytes", "flops",
               "device", "dtype", "attention", "threads"}


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "scene.png"
    picture(1).save(path)
    return path


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_schema(capsys, checkpoints, image_file):
    methods = "vanilla,random,pooling,fastv,fastv_reverse,fastv_window,fastv_vis,alpha"
    code, out, _ = run_cli(capsys, "run", "--image", image_file, "--image", image_file, "--prompt", "what is it ?",
                           "--methods", methods, "--keep", 5, "--model", checkpoints["llava"], "--max-new-tokens", 3,
                           "--threads", 1, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["cached"] is False and data["model"] == str(checkpoints["llava"])
    assert [i["path"] for i in data["images"]] == [str(image_file)] * 2
    assert set(data["images"][0]) >= {"path", "width", "height", "grid", "tokens"}
    assert [r["method"] for r in data["results"]] == methods.split(",")
    for r in data["results"]:
        assert RESULT_KEYS <= set(r)
        assert set(r["timings"]) >= {"vision_ms", "prefill_ms", "scoring_ms", "decode_ms_per_token", "total_ms"}
        assert set(r["tokens"]) == {"image_total", "kept_at_layer", "layer_averaged"}
        assert set(r["flops"]) >= {"prefill", "ratio_to_vanilla", "formula"}
        for img in r["images"]:
            assert len(img["kept"]) + len(img.get("groups", [])) == (36 if r["method"] == "vanilla" else 5)
    assert data["results"][0]["flops"]["ratio_to_vanilla"] == 1.0
    assert all(r["flops"]["ratio_to_vanilla"] < 1 for r in data["results"][1:])


def test_ratio_and_table(capsys, checkpoints, image_file):
    code, out, _ = run_cli(capsys, "run", "--image", image_file, "--prompt", "what ?", "--methods", "fastv,random",
                           "--ratio", 0.25, "--model", checkpoints["qwen2_vl"], "--max-new-tokens", 2)
    assert code == 0
    assert "fastv" in out and "random" in out and "prefill ms" in out


@pytest.mark.parametrize("args, message", [
    (["--keep", "0"], "keep must be"),
    (["--keep", "999"], "more than the image"),
    (["--layer", "9"], "out of range"),
    (["--methods", "nope"], "unknown method"),
    (["--prompt", "  "], "prompt is empty"),
    (["--ratio", "2"], "ratio must be"),
])
def test_bad_input_exit_2_one_line(capsys, checkpoints, image_file, args, message):
    argv = ["run", "--image", image_file, "--prompt", "what ?", "--model", checkpoints["llava"], *args]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_missing_and_non_image_files(capsys, tmp_path, checkpoints):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    for path, message in ((tmp_path / "missing.png", "not found"), (bad, "not a readable image")):
        code, _, err = run_cli(capsys, "run", "--image", path, "--prompt", "hi", "--model", checkpoints["llava"])
        assert code == 2 and message in err


@pytest.mark.slow
@pytest.mark.multiprocess
def test_unloadable_model_is_one_sentence(tmp_path, image_file):
    proc = subprocess.run([sys.executable, "-m", "explorer", "run", "--image", str(image_file), "--prompt", "hi",
                           "--model", str(tmp_path / "no-such-model")], capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 3
    assert proc.stderr.strip().startswith("error: ") and "Traceback" not in proc.stderr


NO_CLS = {"qwen2_vl": "Qwen2-VL's", "qwen2_5_vl": "Qwen2.5-VL's", "llava_onevision": "LLaVA-OneVision's",
          "qwen3_vl": "Qwen3-VL's"}


@pytest.mark.parametrize("family", list(NO_CLS))
def test_all_methods_without_cls_not_applicable_is_not_failure(capsys, checkpoints, image_file, family):
    """Every registered method on a tiny model whose tower has no [CLS] (Qwen, SigLIP): one result each; the ones
    its tower cannot serve ([CLS], merging inside the tower) are 'not_applicable' with one sentence, decided
    before model work; the others run; exit 0."""
    from explorer.methods import REGISTRY
    code, out, err = run_cli(capsys, "run", "--image", image_file, "--prompt", "what is it ?", "--methods",
                             ",".join(REGISTRY), "--keep", 4, "--model", checkpoints[family],
                             "--max-new-tokens", 2, "--threads", 1, "--json")
    assert code == 0, err
    results = json.loads(out)["results"]
    assert [r["method"] for r in results] == list(REGISTRY)
    skipped = {r["method"]: r for r in results if r["status"] == "not_applicable"}
    assert {"fastervlm", "visionzip", "mustdrop"} <= set(skipped)
    label = NO_CLS[family]  # the family itself, named
    for r in skipped.values():
        assert "[CLS]" in r["reason"] and len(r["reason"].splitlines()) == 1 and r["reason"].endswith(".")
        assert label in r["reason"]
        assert "timings" not in r and r["images"] == []
    ran = [r for r in results if r["status"] == "ok"]
    assert {"vanilla", "fastv", "dart", "sparsevlm", "divprune"} <= {r["method"] for r in ran}
    assert all(r["convention"] == "paper" and r["answer"] is not None for r in ran)


def test_only_inapplicable_methods_exit_2(capsys, checkpoints, image_file):
    code, out, err = run_cli(capsys, "run", "--image", image_file, "--prompt", "what ?", "--methods",
                             "fastervlm,visionzip", "--keep", 4, "--model", checkpoints["qwen2_vl"], "--threads", 1)
    assert code == 2 and "no chosen method applies" in err and "[CLS]" in err and len(err.strip().splitlines()) == 1
