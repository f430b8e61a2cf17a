"""What a user sees of a run: pictures in the run folder and in an offline W&B run, the generation
contact sheet and W&B table, and the inspection notebook executed on a finished run."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from PIL import Image

from tests.conftest import REPO
from tests.helpers import FAST
from tests.integration.test_cli import run

NOTEBOOK = REPO / "notebooks" / "inspect_run.ipynb"


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory):
    """A tiny run (2 + 4 steps) logging to CSV and an offline W&B run, with generation after it."""
    from tests.conftest import write_scene

    root = tmp_path_factory.mktemp("visuals")
    scene = write_scene(root / "scene", classes=["red box", "blue box"])
    out = root / "run"
    overrides = [o for o in FAST if o not in ("logger=none", "callbacks.samples=null")]
    result = run("bas-train", *overrides, "logger=csv_wandb", f"data.scene.folder={scene}",
                 "method.phase1_steps=2", "method.phase2_steps=4", "callbacks.attention_maps.every_n_steps=2",
                 "callbacks.samples.every_n_steps=3", "callbacks.samples.num_inference_steps=2",
                 f"hydra.run.dir={out}", env_extra={"WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-3000:]
    result = run("bas-generate", f"pipeline={out / 'pipeline'}", f"hydra.run.dir={out / 'samples'}",
                 "generation.num_inference_steps=2", "generation.num_images_per_prompt=1",
                 "generation.wandb_table=true", "generation.progress=false", env_extra={"WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _media(run_dir: Path, kind: str) -> list[str]:
    (offline,) = run_dir.glob("wandb/offline-run-*")
    return sorted(p.name for p in (offline / "files" / "media" / kind).rglob("*") if p.is_file())


def test_callbacks_fire_at_the_configured_steps(wandb_run):
    visuals = wandb_run / "visuals"
    assert sorted(p.name for p in (visuals / "attention").iterdir()) == [
        "step_000002.png", "step_000004.png", "step_000006.png"]
    # every 3 steps, at the end of phase 1 (step 2) and at the end of training (step 6)
    assert sorted(p.name for p in (visuals / "samples").iterdir()) == [
        "step_000002.png", "step_000003.png", "step_000006.png"]
    assert (visuals / "scene.png").is_file()


def test_offline_wandb_run_holds_the_pictures_and_config(wandb_run):
    images = _media(wandb_run, "images")
    assert len([n for n in images if n.startswith("attention_")]) == 3
    assert len([n for n in images if n.startswith("samples_")]) == 3
    assert len([n for n in images if n.startswith("scene_") and not n.endswith(".mask.png")]) == 1
    assert len([n for n in images if n.endswith(".mask.png")]) == 1  # the segmentation overlay
    # wandb 0.31 keeps an offline run's config only in its binary log; its JSON values are plain text there
    (log_file,) = wandb_run.glob("wandb/offline-run-*/run-*.wandb")
    log = log_file.read_bytes()
    assert b'"union_sampling":true,"flip_p":0.5' in log  # the resolved Hydra config (data.loader)
    assert b'"class_prompt":"a photo at the beach"' in log
    assert b"exported_pipeline" in log and str(wandb_run / "pipeline").encode() in log


def test_scalars_include_iou_lr_and_phase(wandb_run):
    header = (wandb_run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("loss", "loss_masked", "loss_attention", "iou/asset0", "iou/asset1", "lr", "phase"):
        assert key in header


def test_generation_contact_sheet_and_wandb_table(wandb_run):
    samples = wandb_run / "samples"
    records = [json.loads(line) for line in (samples / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 3
    page = (samples / "index.html").read_text()
    assert page.count("<tr>") == 1 + 3 and "sortBy(" in page and "0002_attn_asset1.png" in page
    tables = _media(samples, "table")
    assert len(tables) == 1
    (offline,) = samples.glob("wandb/offline-run-*")
    (table_file,) = (offline / "files" / "media" / "table").rglob("*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["image", "prompt", "seed", "guidance_scale", "attention <asset0>",
                                "attention <asset1>"]
    assert len(table["data"]) == 3


def test_attention_overlay_has_the_image_size(wandb_run):
    samples = wandb_run / "samples"
    assert Image.open(samples / "0000_attn_asset0.png").size == Image.open(samples / "0000.png").size == (64, 64)


def test_notebook_has_no_stored_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_notebook_runs_on_a_finished_run(wandb_run, monkeypatch):
    monkeypatch.setenv("BAS_RUN_DIR", str(wandb_run))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    resources = {"metadata": {"path": str(NOTEBOOK.parent)}}
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources=resources).execute()
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert str(wandb_run) in text
    assert "<asset1>" in text and "49409" in text  # the learned tokens table
    assert "3 attention snapshots" in text
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    images = sum(1 for o in outputs if "image/png" in o.get("data", {}))
    assert images >= 5


def test_wandb_group_and_name_follow_the_sweep(tmp_path):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    from tests.helpers import compose_config

    cfg = compose_config("train", ["logger=wandb"], tmp_path)
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.mode = RunMode.MULTIRUN
        hydra_cfg.sweep.dir = "outputs/train/multiruns/2026-11-25_10-00-00"
        hydra_cfg.job.override_dirname = "variant=no_phase1"
    assert cfg.logger.wandb.group == "2026-11-25_10-00-00"
    assert cfg.logger.wandb.name == "variant=no_phase1"
