"""The evaluation runner end to end: the toy world's CPU sweep through the real CLI (every method, a
crashing trial, resume, rows kept without their pipeline), and the paper world's metrics on the tiny model with
tiny encoders from disk."""

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from break_a_scene.evaluation.benchmark_sets import build_toy_set, register_resolvers
from break_a_scene.evaluation.runner import run_trial

from ..helpers import FAST, compose_config
from .encoders_tiny import save_tiny_clip, save_tiny_dino

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
VARIANTS = ["break_a_scene", "paper", "no_phase1", "no_masked_loss", "no_attention_loss", "no_union_sampling",
            "ti_m", "db_m", "cd_m", "lora"]
TOY_FAST = ["method.phase1_steps=2", "method.phase2_steps=2", "evaluation.prompts.per_subset=1",
            "evaluation.num_images_per_prompt=1", "evaluation.num_inference_steps=4", "evaluation.progress=false",
            "trainer.enable_model_summary=false"]


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_toy_sweep_every_method_failure_resume_and_aggregate(tmp_path):
    bench = build_toy_set(tmp_path / "bench", count=2, seed=0)  # scene_000: 2 objects, scene_001: 3
    (bench / "scene_001" / "mask1.png").write_bytes(b"not a png")  # its trials crash before training
    out = tmp_path / "eval"
    command = [str(BIN / "bas-evaluate"), "-m", "-cd", str(REPO / "experiments"), "+sweep=toyworld_cpu",
               f"benchmark.root={bench}", "benchmark.scene_index=0,1", f"evaluation.out_dir={out}", *TOY_FAST]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    first = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    for variant in VARIANTS:
        rows = _rows(out / variant / "scene_000" / "seed_0" / "rows.csv")
        assert len(rows) == 3  # subsets {0}, {1}, {0, 1}: one prompt and one image each
        assert {r["method"] for r in rows} == {variant} and {r["split"] for r in rows} == {"dev"}
        assert sorted(int(r["concepts"]) for r in rows) == [1, 1, 2]
        failed = json.loads((out / variant / "scene_001" / "seed_0" / "failed.json").read_text())
        assert "mask1.png" in failed["error"]
    assert not list(out.rglob(".running"))  # each trial's lock went with its runner's work
    asset = json.loads((out / "lora" / "scene_000" / "seed_0" / "pipeline" / "break_a_scene.json").read_text())
    assert asset["format"] == "lora_asset"  # evaluated through its base model, the shipped toy model
    pipeline = out / "ti_m" / "scene_000" / "seed_0" / "pipeline" / "break_a_scene.json"
    stamp = pipeline.stat().st_mtime_ns
    kept_rows_only = out / "db_m" / "scene_000" / "seed_0"
    shutil.rmtree(kept_rows_only / "pipeline")  # a finished trial whose rows alone were kept (committed results)

    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert pipeline.stat().st_mtime_ns == stamp  # reused, not retrained
    assert len(_rows(out / "ti_m" / "scene_000" / "seed_0" / "rows.csv")) == 3  # nothing appended
    assert not (kept_rows_only / "pipeline").exists()  # complete rows: not trained again
    assert len(_rows(kept_rows_only / "rows.csv")) == 3

    report = subprocess.run([str(BIN / "bas-aggregate"), str(out)], capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    table = json.loads((out / "aggregate" / "table.json").read_text())
    assert set(table["methods"]) == set(VARIANTS)
    assert table["failed_trials"] == len(VARIANTS)
    assert {"identity", "prompt_following", "extra_objects", "mixed", "attention_iou", "stray_training_slot",
            "stray_other"} <= set(table["metrics"])
    for stats in table["methods"].values():
        assert stats["images"] == 3 and stats["units"] == 1
        for metric in table["metrics"]:  # shares in [0, 1]; the stray_* counts are objects in 3 slots
            assert math.isfinite(stats[metric][0]) and 0 <= stats[metric][0] <= (3 if "stray" in metric else 1)
    assert (out / "aggregate" / "figure.png").stat().st_size > 1000


def test_a_concept_library_trial_joint_and_composed(tmp_path):
    """Trial 0 of benchmark.pictures=2 learns scenes 0 and 1: jointly (one export, the library's tokens) and as two
    LoRA assets composed at generation (<1:asset0>, <2:asset0>, ...); a rerun trains and samples nothing."""
    bench = build_toy_set(tmp_path / "bench", count=2, seed=0)  # blue circle + white ring; 3 other objects
    out = tmp_path / "eval"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    base = [str(BIN / "bas-evaluate"), "-m", "-cd", str(REPO / "experiments"), "+sweep=toyworld_library",
            f"benchmark.root={bench}", "benchmark.scene_index=0", f"evaluation.out_dir={out}", *TOY_FAST]
    for extra in (["variant=break_a_scene"], ["benchmark.library=composed", "variant=lora"]):
        run = subprocess.run(base + extra, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stderr[-3000:]
    joint = out / "joint_break_a_scene" / "scene_000+scene_001" / "seed_0"
    composed = out / "composed_lora" / "scene_000+scene_001" / "seed_0"
    manifest = json.loads((joint / "pipeline" / "break_a_scene.json").read_text())
    assert manifest["tokens"] == [f"<asset{i}>" for i in range(5)]
    for rows, singles in ((_rows(joint / "rows.csv"), 5), (_rows(composed / "rows.csv"), 5)):
        assert sum(r["concepts"] == "1" for r in rows) == singles
        assert sum(r["concepts"] == "2" for r in rows) == 2 * 3  # each of 2 objects with each of 3
        assert {r["scene"] for r in rows} == {"scene_000+scene_001"} and {r["split"] for r in rows} == {"dev"}
    cross = [r["tokens"].split("|") for r in _rows(composed / "rows.csv") if r["concepts"] == "2"]
    assert all(sorted(t[:3] for t in pair) == ["<1:", "<2:"] for pair in cross)
    for scene in ("scene_000", "scene_001"):
        asset = json.loads((composed / "pictures" / scene / "pipeline" / "break_a_scene.json").read_text())
        assert asset["format"] == "lora_asset"
    stamp = (joint / "rows.csv").stat().st_mtime_ns
    again = subprocess.run(base + ["variant=break_a_scene"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=900)
    assert again.returncode == 0 and (joint / "rows.csv").stat().st_mtime_ns == stamp
    refused = subprocess.run([str(BIN / "bas-evaluate"), "-cd", str(REPO / "experiments"), "+sweep=toyworld_library",
                              f"benchmark.root={bench}", f"evaluation.out_dir={out}", "benchmark.library=composed",
                              "variant=break_a_scene", *TOY_FAST], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 2 and "train them with variant=lora" in refused.stderr.strip().splitlines()[-1]


def test_paper_world_metrics_on_the_tiny_model(tmp_path, scene_dir):
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of {} in the snow\n")
    overrides = [
        *[o for o in FAST if not o.startswith("callbacks.")], "evaluation/segmenter=attention",
        f"data.scene.folder={scene_dir}", f"evaluation.prompts.templates={templates}",
        f"evaluation.clip.model_name=local-dir:{save_tiny_clip(tmp_path / 'clip')}", "evaluation.clip.pretrained=null",
        f"evaluation.dino.name_or_path={save_tiny_dino(tmp_path / 'dino')}", "evaluation.num_images_per_prompt=2",
        "evaluation.num_inference_steps=3", "evaluation.dtype=float32", "evaluation.batch_size=4",
        "evaluation.progress=false", "evaluation.continue_on_error=false",
        "evaluation.dreamsim=null", "evaluation.detector=null",
    ]
    register_resolvers()
    cfg = compose_config("evaluate", overrides, tmp_path)
    trial = run_trial(cfg)
    rows = _rows(trial / "rows.csv")
    assert len(rows) == 6  # subsets {0}, {1}, {0, 1} x 2 images
    assert rows[4]["prompt"] == "a photo of <asset0> and <asset1> in the snow"
    assert rows[4]["class_prompt"] == "a photo of a red box and a blue box in the snow"
    assert [int(r["sample_seed"]) for r in rows] == [0, 1, 2, 3, 4, 5]
    for row in rows:
        assert -1 <= float(row["prompt_similarity"]) <= 1
        assert -1 <= float(row["identity_similarity"]) <= 1 and -1 <= float(row["clip_i"]) <= 1
        assert float(row["concept_acc1"]) <= float(row["concept_acc3"]) == 1.0  # 2 concepts: top-3 always hits
        assert float(row["concepts_found"]) == 1.0  # every prompted token has its attention map
        assert (trial / row["image"]).is_file()
    summary = json.loads((trial / "summary.json").read_text())
    mean = sum(float(r["prompt_similarity"]) for r in rows) / 6
    assert math.isclose(summary["prompt_similarity"], mean, rel_tol=1e-6)


def test_a_trial_lock_goes_with_its_work_however_it_ends(tmp_path):
    import pytest

    from break_a_scene.evaluation.runner import LOCK_FILE, TrialBusy, trial_lock

    trial = tmp_path / "method" / "scene" / "seed_0"
    with pytest.raises(RuntimeError, match="crashed"):
        with trial_lock(trial):
            assert (trial / LOCK_FILE).read_text().startswith(f"pid {os.getpid()} on ")
            with pytest.raises(TrialBusy, match="is held by another runner"):  # not even by the same process
                with trial_lock(trial):
                    pass
            assert (trial / LOCK_FILE).is_file()  # the refused one leaves the holder's lock alone
            raise RuntimeError("crashed")
    assert not (trial / LOCK_FILE).exists()


def test_a_trial_lock_goes_when_the_runner_is_terminated(tmp_path):
    import signal

    from break_a_scene.evaluation.runner import LOCK_FILE

    trial = tmp_path / "seed_0"
    held = tmp_path / "held"
    code = ("import pathlib, time\n"
            "from break_a_scene.evaluation.runner import trial_lock\n"
            f"with trial_lock(pathlib.Path({str(trial)!r})):\n"
            f"    pathlib.Path({str(held)!r}).touch()\n"
            "    time.sleep(60)\n")
    runner = subprocess.Popen([sys.executable, "-c", code])
    for _ in range(600):
        if held.exists() or runner.poll() is not None:
            break
        time.sleep(0.05)
    assert held.exists() and (trial / LOCK_FILE).is_file()
    runner.send_signal(signal.SIGTERM)  # SLURM's preemption, a time limit, `kill`
    assert runner.wait(timeout=30) == 128 + signal.SIGTERM
    assert not (trial / LOCK_FILE).exists()
