"""Every door on every model family (`cases.py` finds them): bas-train through both phases and the export, the
documented plain-diffusers reload, bas-generate with attention maps, bas-edit, a LoRA phase 2 and its asset
(through bas-generate and by hand as documented), every memory preset, bas-evaluate on one trial, and the
inspection notebook on the run. Each door must work; the refusals (and their advice, followed) are in
test_refusals.py."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from break_a_scene.cli import edit as edit_cli
from break_a_scene.cli import evaluate as evaluate_cli
from break_a_scene.cli import generate as generate_cli
from break_a_scene.cli import save_model as save_cli
from break_a_scene.cli import train as train_cli
from break_a_scene.editing import load_image_and_mask
from break_a_scene.model_folders import loading_configs
from tests.contract.cases import CASES, REPO, TOY_SCENE, case_params, documented_blocks, invoke

TRAIN = ["experiment=toyworld", "method.phase1_steps=1", "method.phase2_steps=1", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1", "callbacks.samples=null",
         "callbacks.attention_maps.every_n_steps=1"]
TRIAL = [o for o in TRAIN if not o.startswith("callbacks.")]  # bas-evaluate draws no visuals while training
BOTH = "a photo of <asset0> on the left and <asset1> on the right"
MEMORY_PRESETS = sorted(path.stem for path in (REPO / "conf" / "memory").glob("*.yaml"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}


def test_the_default_suite_covers_a_unet_and_an_mmdit():
    defaults = {case.kind for case in CASES if case.shipped}
    assert defaults == {"unet", "transformer"}, CASES
    assert {case.config for case in CASES} >= {"tiny", "tiny_sdxl", "tiny_sd3", "tiny_flux", "toyworld",
                                               "toyworld_mmdit"}


@pytest.fixture(scope="module", params=case_params())
def case(request):
    return request.param


@pytest.fixture(scope="module")
def run(case, tmp_path_factory) -> Path:
    """One run of the family through bas-train: 1 + 1 steps on the shipped toy scene, exported."""
    folder = tmp_path_factory.mktemp(f"run_{case.config}")
    code, err = invoke(train_cli.main, [*TRAIN, f"model={case.config}", f"hydra.run.dir={folder}"])
    assert code == 0, err[-3000:]
    return folder


@pytest.fixture(scope="module")
def base_model(case, tmp_path_factory) -> list[str]:
    """The overrides that load the family from a folder (what a LoRA asset names as its base): the shipped
    model as it is, a model built from config saved first by bas-save-model."""
    if case.shipped:
        return [f"model={case.config}"]
    folder = tmp_path_factory.mktemp(f"base_{case.config}")
    code, err = invoke(save_cli.main, [f"model={case.config}", f"out={folder / 'model'}",
                                       f"hydra.run.dir={folder / 'log'}"])
    assert code == 0, err[-3000:]
    loader = loading_configs(case.family, REPO / "conf")[0]
    return [f"model={loader}", f"model.components.pretrained_model_name_or_path={folder / 'model'}",
            f"model.resolution={case.resolution}"]


@pytest.fixture(scope="module")
def lora_run(case, base_model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp(f"lora_{case.config}")
    code, err = invoke(train_cli.main, [*TRAIN, *base_model, "variant=lora", f"hydra.run.dir={folder}"])
    assert code == 0, err[-3000:]
    return folder


def _manifest(pipeline: Path) -> dict:
    return json.loads((pipeline / "break_a_scene.json").read_text())


def test_train_runs_both_phases_and_exports_the_family(case, run):
    manifest = _manifest(run / "pipeline")
    assert manifest["family"] == case.family.qualified_name() and manifest["format"] == "pipeline"
    assert manifest["tokens"] == ["<asset0>", "<asset1>"] and manifest["resolution"] == case.resolution
    with open(run / "csv" / "metrics.csv") as f:
        steps = {int(row["step"]) for row in csv.DictReader(f) if row.get("loss")}
    assert steps == {0, 1}  # one step of each phase logged its loss


def _run_snippet(code: str, out: Path, cwd: Path) -> Image.Image:
    script = code + f"\nimage.save({str(out)!r})\n"
    result = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=ENV, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return Image.open(out)


def _without_t5(pipeline_or_base: Path) -> bool:
    index = json.loads((pipeline_or_base / "model_index.json").read_text())
    return index.get("text_encoder_3") == [None, None]


def test_the_export_loads_with_the_documented_diffusers_call(case, run, tmp_path):
    blocks = documented_blocks(REPO / "docs" / "models.md")
    pipeline = run / "pipeline"
    label = "every export but SD 3 without T5"
    if _without_t5(pipeline):
        label = "the toy MM-DiT" if case.family.call_kwargs().get("max_sequence_length") == 0 else "SD 3 without T5"
    code = blocks["setup"] + blocks[label]
    code = code.replace('"outputs/run/pipeline"', repr(str(pipeline)))
    image = _run_snippet(code, tmp_path / "image.png", tmp_path)
    assert image.size == (case.resolution, case.resolution)


def _generate_both(pipeline: Path, out: Path) -> dict:
    """bas-generate's one image of both tokens; its record in samples.jsonl, each token's map listed."""
    code, err = invoke(generate_cli.main, [f"pipeline={pipeline}", f"generation.prompts=['{BOTH}']",
                                           "generation.num_images_per_prompt=1", "generation.num_inference_steps=2",
                                           "generation.device=cpu", "generation.progress=false",
                                           f"hydra.run.dir={out}"])
    assert code == 0, err[-3000:]
    (record,) = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted(record["attention"]) == ["<asset0>", "<asset1>"]
    return record


def test_generate_draws_with_each_tokens_attention_map(run, tmp_path):
    out = tmp_path / "samples"
    _generate_both(run / "pipeline", out)
    maps = np.load(out / "0000_attn.npz")
    assert sorted(maps.files) == ["asset0", "asset1"] and all(maps[k].max() == 1.0 for k in maps.files)


def test_edit_draws_inside_the_mask_and_keeps_the_outside(case, run, tmp_path):
    out = tmp_path / "edit"
    code, err = invoke(edit_cli.main, [f"pipeline={run / 'pipeline'}", f"image={TOY_SCENE / 'img.png'}",
                                       f"mask={TOY_SCENE / 'mask0.png'}", "prompt='a photo of <asset1>'",
                                       "edit.num_images=1", "edit.num_inference_steps=3", "edit.device=cpu",
                                       "edit.progress=false", f"hydra.run.dir={out}"])
    assert code == 0, err[-3000:]
    (record,) = json.loads((out / "edit.json").read_text())["images"]
    assert record["attention"] == {"<asset1>": "0000_attn_asset1.png"}
    edited, original = (np.asarray(Image.open(out / name)) for name in ("0000.png", "original.png"))
    _, mask = load_image_and_mask(TOY_SCENE / "img.png", TOY_SCENE / "mask0.png", case.resolution)  # as edit read it
    mask = mask.bool().numpy()
    assert edited.shape == (case.resolution, case.resolution, 3)
    assert np.array_equal(edited[~mask], original[~mask])  # pasted back outside


def test_a_lora_asset_generates_and_loads_by_hand_as_documented(case, lora_run, tmp_path):
    pipeline = lora_run / "pipeline"
    manifest = _manifest(pipeline)
    assert manifest["format"] == "lora_asset" and manifest["family"] == case.family.qualified_name()
    _generate_both(pipeline, tmp_path / "samples")

    code = documented_blocks(REPO / "docs" / "models.md")["a LoRA asset"]
    code = code.replace('"outputs/run/pipeline"', repr(str(pipeline)))
    if _without_t5(Path(manifest["base_model"])):  # what the docs say to add for a base without T5
        code = code.replace("torch_dtype=torch.float32)", "text_encoder_3=None, tokenizer_3=None, "
                                                          "torch_dtype=torch.float32)")
        if case.family.call_kwargs().get("max_sequence_length") == 0:
            code = code.replace("width=size)", "width=size, max_sequence_length=0)")
    image = _run_snippet(code, tmp_path / "by_hand.png", tmp_path)
    assert image.size == (case.resolution, case.resolution)


@pytest.mark.parametrize("preset", MEMORY_PRESETS)
def test_every_memory_preset_trains(case, base_model, preset, tmp_path):
    code, err = invoke(train_cli.main, [*TRAIN, *base_model, f"memory={preset}", f"hydra.run.dir={tmp_path}"])
    assert code == 0, err[-3000:]
    manifest = _manifest(tmp_path / "pipeline")
    lora = preset in ("lora_bf16", "qlora_nf4")
    assert manifest["format"] == ("lora_asset" if lora else "pipeline")


def test_evaluate_scores_one_trial(case, tmp_path):
    out = tmp_path / "evaluation"
    code, err = invoke(evaluate_cli.main, [
        "evaluation=toyworld", *TRIAL, f"model={case.config}", f"data.scene.folder={TOY_SCENE}",
        "evaluation.prompts.per_subset=1", "evaluation.num_images_per_prompt=1", "evaluation.num_inference_steps=2",
        "evaluation.progress=false", "evaluation.continue_on_error=false", f"evaluation.out_dir={out}"])
    assert code == 0, err[-3000:]
    (rows_file,) = out.rglob("rows.csv")
    with open(rows_file) as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["concepts"]) for r in rows) == [1, 1, 2]  # subsets {0}, {1}, {0, 1}: one image each
    assert all(0 <= float(r["identity"]) <= 1 for r in rows)


def test_the_notebook_runs_on_a_lora_asset_run(lora_run):
    import nbformat
    from nbclient import NotebookClient

    notebook_file = REPO / "notebooks" / "inspect_run.ipynb"
    notebook = nbformat.read(notebook_file, as_version=4)
    os.environ["BAS_RUN_DIR"] = str(lora_run)
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(notebook_file.parent)}}).execute()
    finally:
        del os.environ["BAS_RUN_DIR"]
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "<asset0>" in text and "<asset1>" in text and str(lora_run) in text
