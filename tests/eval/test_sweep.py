"""Sweeps end to end on the tiny random LLaVA: files, resume, two-process shard merge, quick sweep, Table 6."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from explorer.eval.quick import run_small_sweep
from explorer.eval.report import load_records
from explorer.eval.sweep import configs, run_sweep
from explorer.eval.training_aware import table6

ROOT = Path(__file__).resolve().parents[2]


def _lines(out: Path) -> int:
    return sum(len(f.read_text().splitlines()) for f in out.glob("records-r*.jsonl"))


@pytest.mark.slow
def test_sweep_files_and_resume(tmp_path, engine, checkpoints):
    out = tmp_path / "s"
    cfgs = configs(["vanilla", "random", "fastv"], [16, 8], alphas=[0.0, 1.0])
    run_sweep(out, ["pope", "grounding"], cfgs, str(checkpoints["llava"]), limit=3, engine=engine,
              max_new_tokens=4, progress=False)
    n = 2 * 3 * len(cfgs)
    assert _lines(out) == n
    for name in ("summary.csv", "report.md", "budget.png", "alpha.png", "position_hist.png",
                 "position_heatmap.png"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert "Retain 16 tokens" in report and "α dilemma" in report and "Latency vs FLOPs" in report
    assert "budget convention: paper; multi-grid ranking: authors" in report
    rec = json.loads((out / "records-r0.jsonl").read_text().splitlines()[0])
    assert {"metrics", "images", "timings", "flops_ratio", "kv_cache_bytes", "device"} <= rec.keys()
    run_sweep(out, ["pope", "grounding"], cfgs, str(checkpoints["llava"]), limit=3, engine=engine,
              max_new_tokens=4, progress=False)
    assert _lines(out) == n  # resumed: nothing recomputed
    run_sweep(out, ["pope", "grounding"], cfgs, str(checkpoints["llava"]), limit=4, engine=engine,
              max_new_tokens=4, progress=False)
    assert _lines(out) == n + 2 * len(cfgs)  # only the new doc of each task


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_process_shards_merge(tmp_path, checkpoints):
    out = tmp_path / "sh"
    args = [sys.executable, "-m", "explorer.eval", "sweep", "--task", "haystack", "--splits", "1,2",
            "--methods", "vanilla,random", "--keep", "8", "--model", str(checkpoints["llava"]), "--limit", "4",
            "--max-new-tokens", "2", "--out", str(out)]
    env = {**os.environ, "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    env.pop("MASTER_ADDR", None)
    procs = [subprocess.Popen(args, cwd=ROOT, env={**env, "RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for r in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stdout.read().decode()[-2000:]
    docs0 = {json.loads(x)["doc_id"] for x in (out / "records-r0.jsonl").read_text().splitlines()}
    docs1 = {json.loads(x)["doc_id"] for x in (out / "records-r1.jsonl").read_text().splitlines()}
    assert len(docs0) == len(docs1) == 2 and not docs0 & docs1
    assert len(load_records(out)) == 8
    assert "Language guidance" in (out / "report.md").read_text()


@pytest.mark.slow
def test_quick_sweep(engine, checkpoints, tmp_path):
    calls = []
    md, pngs = run_small_sweep(engine, "vqa", ["vanilla", "pooling", "fastv_window"], [16], n=2,
                               progress=lambda d, t, s: calls.append((d, t)), model_id=str(checkpoints["llava"]),
                               out=tmp_path / "q", max_new_tokens=2)
    assert "| vanilla |" in md and calls[-1][0] == calls[-1][1] == 6
    assert pngs and all(Path(p).exists() for p in pngs)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_table6_on_tiny_qwen(engine, checkpoints, family):
    md, rows = table6(engine, str(checkpoints[family]), "pope", reductions=(0.5, 0.9), n=2, max_new_tokens=2)
    assert "TACR = 4" in md and rows[1]["keep_fastv_dagger"] >= rows[1]["keep_fastv"]


@pytest.mark.slow
def test_paper_guidance_part(engine, checkpoints, tmp_path):
    from explorer.eval.paper import run_all

    reports = run_all(tmp_path / "p", 4, str(checkpoints["llava"]), engine=engine, parts=("guidance",),
                      max_new_tokens=2)
    text = reports["guidance"].read_text()
    assert "Language guidance" in text and "| fastv_vis | 8 |" in text and "5 image(s)" in text


@pytest.mark.multiprocess
@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(tmp_path, checkpoints):
    """`accelerate launch --multi_gpu --num_processes 2` on a CPU-only host: gloo, PartialState ranks."""
    import shutil

    import pytest

    exe = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("accelerate is not installed (requirements-eval.txt)")
    out = tmp_path / "acc"
    cmd = [exe, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "explorer.eval", "sweep", "--task", "pope", "--methods", "vanilla,fastv",
           "--keep", "8", "--model", str(checkpoints["llava"]), "--limit", "4", "--max-new-tokens", "2",
           "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR")}
    done = subprocess.run(cmd, cwd=ROOT, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert (out / "shard-0-of-2.done").exists() and (out / "shard-1-of-2.done").exists()
    assert len(load_records(out)) == 8 and (out / "report.md").exists()


def test_a_sample_runs_its_configurations_as_one_compare(tmp_path, engine, loaded, checkpoints):
    """Every configuration of a sample shares one trunk (the vision tower runs once per sample, plus the warm-up),
    and each record equals the one a sweep of separate runs (`solo`) writes: answer, kept sets, metrics, costs."""
    from explorer.eval.sweep import Config

    cfgs = configs(["vanilla", "random", "fastv", "pooling", "sparsevlm"], [8, 4], alphas=[0.5])
    cfgs.append(Config("fastv", 10_000))  # more than the image has: an error record in both
    tower = loaded["llava"].model.model.vision_tower
    records, towers = {}, {}
    for mode, solo in (("shared", False), ("solo", True)):
        calls = []
        handle = tower.register_forward_hook(lambda *a: calls.append(1))
        try:
            path = run_sweep(tmp_path / mode, ["pope"], cfgs, str(checkpoints["llava"]), limit=2, engine=engine,
                             max_new_tokens=3, progress=False, rank=0, world=1, report=False, solo=solo)
        finally:
            handle.remove()
        records[mode] = {r["key"]: r for r in map(json.loads, path.read_text().splitlines())}
        towers[mode] = len(calls)
    n_runs = len(cfgs) - 1  # the error configuration never reaches the model
    assert towers == {"shared": 1 + 2, "solo": 1 + 2 * n_runs}
    assert records["shared"].keys() == records["solo"].keys() and len(records["shared"]) == 2 * len(cfgs)
    for key, a in records["shared"].items():
        b = records["solo"][key]
        if "error" in a:
            assert a == b and "10000" in key
            continue
        same = ("answer", "images", "metrics", "tokens", "flops_ratio", "kv_cache_bytes", "boxes")
        assert {k: a[k] for k in same} == {k: b[k] for k in same}, key
        assert (a["timings"]["timing"], b["timings"]["timing"]) == ("shared-prefix", "solo"), key
