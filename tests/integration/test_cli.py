"""The real entry points, as a user runs them: `bas-train`, `bas-generate`, multirun and DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from diffusers import DiffusionPipeline
from PIL import Image

from tests.conftest import REPO
from tests.helpers import FAST

BIN = Path(sys.executable).parent


def run(command: str, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    env.update(env_extra or {})
    result = subprocess.run([str(BIN / command), *args], capture_output=True, text=True, env=env, cwd=REPO)
    return result


def test_train_export_reload_generate(tmp_path, scene_dir):
    out = tmp_path / "run"
    result = run("bas-train", *FAST, "logger=csv", f"data.scene.folder={scene_dir}",
                 "data.initializer_words=[red,blue]", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    pipeline_dir = out / "pipeline"
    manifest = json.loads((pipeline_dir / "break_a_scene.json").read_text())
    assert manifest["tokens"] == ["<asset0>", "<asset1>"]
    assert manifest["initializer_words"] == ["red", "blue"]
    assert manifest["class_names"] == ["red box", "blue box"]
    assert manifest["scene"] == str(scene_dir)
    assert manifest["config"]["method"]["phase1_steps"] == 3
    assert not list(out.glob(".pipeline.partial-*"))
    assert (out / "csv" / "metrics.csv").read_text().startswith("epoch,")

    pipe = DiffusionPipeline.from_pretrained(pipeline_dir, local_files_only=True)
    assert len(pipe.tokenizer) == 49410
    assert pipe.tokenizer("<asset1>").input_ids == [49406, 49409, 49407]
    assert pipe.text_encoder.get_input_embeddings().weight.shape[0] == 49410
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"

    samples = tmp_path / "samples"
    result = run("bas-generate", f"pipeline={pipeline_dir}", f"hydra.run.dir={samples}",
                 "generation.num_inference_steps=2", "generation.num_images_per_prompt=2",
                 "generation.batch_size=3", "generation.progress=false")
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (samples / "samples.jsonl").read_text().splitlines()]
    # default prompts: each token alone and both together, 2 seeds each
    assert [r["prompt"] for r in records[::2]] == [
        "a photo of <asset0> at the beach", "a photo of <asset1> at the beach",
        "a photo of <asset0> and <asset1> at the beach",
    ]
    assert [r["seed"] for r in records] == [0, 1] * 3
    assert list(records[4]["attention"]) == ["<asset0>", "<asset1>"]
    maps = np.load(samples / "0004_attn.npz")
    assert sorted(maps.files) == ["asset0", "asset1"] and maps["asset0"].shape == (8, 8)
    assert maps["asset0"].max() == pytest.approx(1.0)
    for record in records:
        assert (samples / record["image"]).is_file()
        for name in record["attention"].values():
            assert (samples / name).is_file()


def test_generation_does_not_depend_on_batch_size(tmp_path):
    """Per-image seeds: the same (prompt, seed) gives the same image in any batch."""
    from break_a_scene.export import export_pipeline
    from break_a_scene.generate import generate
    from break_a_scene.tokens import add_placeholder_tokens
    from tests.conftest import tiny_components

    parts = tiny_components()
    add_placeholder_tokens(parts.tokenizer, parts.text_encoder, ["<asset0>"])
    export_pipeline(parts, tmp_path / "p", {"tokens": ["<asset0>"], "resolution": 64})
    images = {}
    for batch in (1, 3):
        out = tmp_path / f"b{batch}"
        generate(str(tmp_path / "p"), str(out), ["a photo of <asset0>"], num_images_per_prompt=3,
                 batch_size=batch, num_inference_steps=2, save_attention=False, progress=False)
        images[batch] = [np.asarray(Image.open(out / f"{i:04d}.png")) for i in range(3)]
    for a, b in zip(images[1], images[3]):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_multirun_over_two_values(tmp_path, scene_dir):
    sweep = tmp_path / "sweep"
    result = run("bas-train", "-m", *FAST, f"data.scene.folder={scene_dir}", "method.lambda_attention=0,0.01",
                 f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        manifest = json.loads((sweep / job / "pipeline" / "break_a_scene.json").read_text())
        assert manifest["config"]["method"]["lambda_attention"] == [0.0, 0.01][int(job)]


def test_ddp_on_cpu_keeps_ranks_in_sync_across_the_phase_switch(tmp_path, scene_dir):
    out = tmp_path / "ddp"
    result = run("bas-train", *FAST, "trainer=ddp_cpu", f"data.scene.folder={scene_dir}",
                 "method.phase1_steps=2", "method.phase2_steps=2", f"hydra.run.dir={out}",
                 "+callbacks.checksum._target_=tests.helpers.UnetChecksum", f"+callbacks.checksum.path={out}/unet")
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (out / "unet.rank0").read_text(), (out / "unet.rank1").read_text()
    # each rank sees different samples, so the UNet stays identical only if phase-2 gradients are all-reduced
    assert rank0 == rank1
    assert (out / "pipeline" / "break_a_scene.json").is_file()
