"""Every shipped experiment composes, and says what its name promises."""

from pathlib import Path

import pytest
from hydra.utils import instantiate

from tests.conftest import CONF
from tests.helpers import compose_config

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_all_experiments_are_listed():
    assert EXPERIMENTS == [
        "demo", "no_attention_loss", "no_masked_loss", "no_phase1", "no_union_sampling", "official", "paper",
        "toyworld",
    ]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes(name, tmp_path):
    cfg = compose_config("train", [f"experiment={name}"], tmp_path)
    method, data = cfg.method, cfg.data
    expected = {
        "official": dict(phase1=400, phase2=400, masked=True, attn=0.01, union=True, prior=True, betas=[0.9, 0.999]),
        "paper": dict(phase1=400, phase2=400, masked=True, attn=0.01, union=True, prior=True, betas=[0.9, 0.99]),
        "no_phase1": dict(phase1=0, phase2=400, masked=True, attn=0.01, union=True, prior=True, betas=[0.9, 0.999]),
        "no_masked_loss": dict(phase1=400, phase2=400, masked=False, attn=0.01, union=True, prior=True,
                               betas=[0.9, 0.999]),
        "no_attention_loss": dict(phase1=400, phase2=400, masked=True, attn=0.0, union=True, prior=True,
                                  betas=[0.9, 0.999]),
        "no_union_sampling": dict(phase1=400, phase2=400, masked=True, attn=0.01, union=False, prior=True,
                                  betas=[0.9, 0.999]),
        "demo": dict(phase1=40, phase2=40, masked=True, attn=0.01, union=True, prior=True, betas=[0.9, 0.999]),
        "toyworld": dict(phase1=300, phase2=200, masked=True, attn=0.01, union=True, prior=False,
                         betas=[0.9, 0.999]),
    }[name]
    assert method.phase1_steps == expected["phase1"] and method.phase2_steps == expected["phase2"]
    assert method.masked_loss == expected["masked"] and method.lambda_attention == expected["attn"]
    assert data.loader.union_sampling == expected["union"]
    assert data.prior_preservation.enabled == expected["prior"]
    assert list(cfg.optimizer.betas) == expected["betas"]
    lrs = (2e-3, 1e-4) if name == "toyworld" else (5e-4, 2e-6)  # the toy model's own (README, "The toy world")
    assert (method.phase1_lr, method.phase2_lr) == lrs and method.mask_normalization == "none"
    assert method.mask_downsampling == ("max" if name == "toyworld" else "nearest")
    assert cfg.trainer.gradient_clip_val == 1.0
    if name == "demo":
        assert cfg.model.resolution == 64 and cfg.trainer.accelerator == "cpu"
        assert Path(data.scene.folder).is_dir()
    elif name == "toyworld":
        assert cfg.model.resolution == 32 and method.attention_resolution_divisor == 2
        assert data.initializer_words == "photo"
        assert Path(data.scene.folder).is_dir() and cfg.model.components.pretrained_model_name_or_path.endswith(
            "assets/toyworld/model")
    else:
        assert cfg.model.components.pretrained_model_name_or_path == "stabilityai/stable-diffusion-2-1-base"
        assert cfg.trainer.precision == "16-mixed" and cfg.model.resolution == 512


def test_optimizer_presets_instantiate(tmp_path):
    import torch

    cfg = compose_config("train", ["optimizer=adamw_paper"], tmp_path)
    opt = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert opt.defaults["betas"] == (0.9, 0.99) or list(opt.defaults["betas"]) == [0.9, 0.99]
    assert opt.defaults["weight_decay"] == 1e-8


def test_generate_config_composes(tmp_path):
    cfg = compose_config("generate", ["pipeline=somewhere"], tmp_path)
    assert cfg.generation.num_inference_steps == 50 and cfg.generation.guidance_scale == 7.5


@pytest.mark.parametrize("experiment,prior", [("official", True), ("toyworld", False)])
def test_paper_variant_keeps_the_experiments_prior_preservation(tmp_path, experiment, prior):
    cfg = compose_config("train", [f"experiment={experiment}", "variant=paper"], tmp_path)
    assert cfg.data.prior_preservation.enabled is prior
    assert list(cfg.optimizer.betas) == [0.9, 0.99] and cfg.optimizer.weight_decay == 1e-8
