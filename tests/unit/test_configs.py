"""Every config file on disk composes (and instantiates, where that needs no weights), every experiment sets
up what it says, and every variant trains what it says in each phase."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import CONF, REPO, write_scene
from tests.helpers import FAST, compose_config

GROUPS = ["model", "data", "masks", "method", "optimizer", "trainer", "callbacks", "logger", "experiment", "variant",
          "memory"]
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]
VARIANTS = sorted(path.stem for path in (CONF / "variant").glob("*.yaml"))
# downloads, or 1.3 B (SD), 3.5 B (SDXL), 7.7 B (SD 3.5 Medium) and 16.8 B (FLUX.1) random parameters
NEEDS_WEIGHTS = {"sd15", "sd21", "sd21_base", "sd21_base_arch", "sdxl", "sdxl_arch", "toyworld", "sd35_medium",
                 "sd35_large", "flux_dev", "flux_schnell", "flux_arch", "sd3_arch"}


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_instantiates(group, option, tmp_path):
    cfg = compose_config("train", [f"{group}={option}"], tmp_path)
    assert cfg.method._target_ == "break_a_scene.settings.MethodSettings"
    if group == "model" and option not in NEEDS_WEIGHTS:
        assert instantiate(cfg.model.components).denoiser is not None
    if group == "optimizer":
        optimizer = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        assert isinstance(optimizer, torch.optim.AdamW)
    if group == "callbacks":
        assert all(instantiate(node) is not None for node in cfg.callbacks.values() if node is not None)
    if group == "logger" and cfg.logger:
        assert all(instantiate(node) is not None for node in cfg.logger.values() if node is not None)
    if group == "trainer" and "ddp" not in option and cfg.trainer.accelerator != "gpu":
        assert instantiate(cfg.trainer, max_steps=1).max_steps == 1


EVALUATE_OPTIONS = [("evaluation", p.stem) for p in sorted((CONF / "evaluation").glob("*.yaml"))] + [
    ("evaluation/segmenter", p.stem) for p in sorted((CONF / "evaluation" / "segmenter").glob("*.yaml"))] + [
    ("hydra/launcher", p.stem) for p in sorted((CONF / "hydra" / "launcher").glob("*.yaml"))]


def test_every_config_file_on_disk_is_covered():
    covered = {CONF / group / f"{option}.yaml" for group, option in OPTIONS + EVALUATE_OPTIONS}
    covered |= {CONF / f"{name}.yaml" for name in ("train", "generate", "pretrain", "evaluate", "masks", "edit",
                                                     "save_model")}
    covered |= {CONF / "paths" / "default.yaml", CONF / "hydra" / "default.yaml"}  # in every composition
    assert set(CONF.rglob("*.yaml")) == covered


@pytest.mark.parametrize("group,option", EVALUATE_OPTIONS, ids=[f"{g}={o}" for g, o in EVALUATE_OPTIONS])
def test_evaluation_and_launcher_options_compose(group, option, tmp_path):
    from break_a_scene.evaluation.benchmark_sets import register_resolvers

    register_resolvers()
    cfg = compose_config("evaluate", [f"{group}={option}"], tmp_path)
    assert cfg.evaluation.out_dir and cfg.task_name == "evaluate"


@pytest.mark.parametrize("config", ["generate", "pretrain", "evaluate", "masks", "edit"])
def test_the_other_entry_points_compose(config, tmp_path):
    from break_a_scene.evaluation.benchmark_sets import register_resolvers

    register_resolvers()
    cfg = compose_config(config, ["pipeline=somewhere"] if config == "generate" else [], tmp_path)
    assert cfg.task_name == config
    assert cfg.overwrite is (config == "evaluate")  # an evaluation trial resumes in its folder by design


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_experiments_are_setups(name, tmp_path):
    """An experiment sets the model, data, trainer and steps; what the method does is the variant's."""
    cfg = compose_config("train", [f"experiment={name}"], tmp_path)
    method = cfg.method
    assert (method.phase1_trainable, method.phase2_trainable) == ("tokens", "all")
    assert method.masked_loss and method.lambda_attention == 0.01 and cfg.data.loader.union_sampling
    assert list(cfg.optimizer.betas) == [0.9, 0.999] and cfg.trainer.gradient_clip_val == 1.0
    setups = {
        # name: (resolution, steps, lrs, prior preservation, precision, mask downsampling)
        "official": (512, (400, 400), (5e-4, 2e-6), True, "32-true", "nearest"),
        "toyworld": (32, (300, 200), (2e-3, 1e-4), False, "32-true", "max"),
        "tiny_photo": (64, (40, 40), (5e-4, 2e-6), True, "32-true", "nearest"),
        "toyworld_library": (32, (300, 200), (2e-3, 1e-4), False, "32-true", "max"),
    }
    assert name in setups, f"experiment={name} is new: add what it sets up here"
    resolution, steps, lrs, prior, precision, downsampling = setups[name]
    assert cfg.model.resolution == resolution and (method.phase1_steps, method.phase2_steps) == steps
    assert (method.phase1_lr, method.phase2_lr) == lrs and cfg.data.prior_preservation.enabled is prior
    assert cfg.trainer.precision == precision and method.mask_downsampling == downsampling
    folders = cfg.data.scene.folders or [cfg.data.scene.folder]
    assert folders and all(Path(f).is_dir() for f in folders)


def _trains(module) -> str:
    """What the module's current phase trains, read from the parameters that require grad."""
    unet = {n for n, p in module.unet.named_parameters() if p.requires_grad}
    text = {n for n, p in module.text_encoder.named_parameters() if p.requires_grad}
    kv = {n for n, _ in module.unet.named_parameters() if ".attn2.to_k." in n or ".attn2.to_v." in n}
    lora = {n for n, _ in module.unet.named_parameters() if ".lora_" in n}
    rows = {n for n in text if n.endswith("token_embedding.rows")}
    if unet == {n for n, _ in module.unet.named_parameters()} and text == {
            n for n, _ in module.text_encoder.named_parameters()}:
        return "all"
    assert rows == text, f"text encoder trains {sorted(text - rows)[:3]} besides the token rows"
    if lora and unet == lora:
        return "tokens+lora"
    return {frozenset(): "tokens", frozenset(kv): "tokens+kv"}[frozenset(unet)]


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_trains_what_it_says(name, tmp_path):
    from break_a_scene.training import build_run

    expected = {
        # name: (phase 1 trains, phase 2 trains, lrs, masked loss, attention loss, union sampling, solid background,
        #        AdamW betas)
        "break_a_scene": ("tokens", "all", (5e-4, 2e-6), True, True, True, False, (0.9, 0.999)),
        "paper": ("tokens", "all", (5e-4, 2e-6), True, True, True, False, (0.9, 0.99)),
        "no_phase1": ("all", "all", (2e-6, 2e-6), True, True, True, False, (0.9, 0.999)),
        "no_masked_loss": ("tokens", "all", (5e-4, 2e-6), False, True, True, False, (0.9, 0.999)),
        "no_attention_loss": ("tokens", "all", (5e-4, 2e-6), True, False, True, False, (0.9, 0.999)),
        "no_union_sampling": ("tokens", "all", (5e-4, 2e-6), True, True, False, False, (0.9, 0.999)),
        "ti_m": ("tokens", "tokens", (5e-4, 5e-4), False, False, True, True, (0.9, 0.999)),
        "db_m": ("all", "all", (2e-6, 2e-6), False, False, True, True, (0.9, 0.999)),
        "cd_m": ("tokens+kv", "tokens+kv", (5e-4, 2e-6), False, False, True, True, (0.9, 0.999)),
        "lora": ("tokens", "tokens+lora", (5e-4, 2e-6), True, True, True, False, (0.9, 0.999)),
        **{beyond: ("tokens", "all", (5e-4, 2e-6), True, True, True, False, (0.9, 0.999))
           for beyond in ("seg_mix", "seg_mix_full", "seg_mix_swap", "seg_mix_degraded", "seg_mix_phase2",
                          "seg_mix_origins", "seg_mix_backdrop", "seg_mix_backdrop_all", "soft_degradation",
                          "strong_degradation", "contrastive", "ema_teacher", "layout_captions", "seg_mix_layout",
                          "beyond")},
    }
    # beyond the paper: (re-placement probability, its loss on the whole picture, degradation noise, contrastive
    # weight, EMA teacher weight and decay); the others (0, False, 0, 0, 0, 0.99)
    remedies = {"seg_mix": (0.5, False, 0.0, 0.0, 0.0, 0.99), "seg_mix_full": (0.5, True, 0.0, 0.0, 0.0, 0.99),
                "seg_mix_swap": (0.5, True, 0.0, 0.0, 0.0, 0.99), "seg_mix_phase2": (0.5, True, 0.0, 0.0, 0.0, 0.99),
                "seg_mix_origins": (0.5, False, 0.0, 0.0, 0.0, 0.99),
                "seg_mix_backdrop": (0.5, True, 0.0, 0.0, 0.0, 0.99),
                "seg_mix_backdrop_all": (0.5, True, 0.0, 0.0, 0.0, 0.99),
                "seg_mix_layout": (0.5, True, 0.0, 0.0, 0.0, 0.99),
                "soft_degradation": (0.0, False, 0.5, 0.0, 0.0, 0.99),
                "contrastive": (0.0, False, 0.0, 0.1, 0.0, 0.99), "ema_teacher": (0.0, False, 0.0, 0.0, 0.2, 0.99),
                "seg_mix_degraded": (0.5, True, 1.0, 0.0, 0.0, 0.99),
                "strong_degradation": (0.0, False, 1.0, 0.0, 0.0, 0.99),
                "beyond": (0.5, True, 0.0, 0.0, 0.0, 0.99)}
    assert name in expected, f"variant={name} is new: add what it trains here"
    phase1, phase2, lrs, masked, attention, union, solid, betas = expected[name]
    scene = write_scene(tmp_path / "scene")
    fused = ["callbacks.export.lora=fused"]  # the tiny model is built from config: no asset for it
    cfg = compose_config("train", [*FAST, f"data.scene.folder={scene}", f"variant={name}", *fused], tmp_path)
    trainer, module, datamodule = build_run(cfg)
    assert cfg.method_name == name
    found = []
    for phase in (1, 2):
        module.phase = phase
        optimizer = module.configure_optimizers()
        found.append(_trains(module))
        assert tuple(optimizer.defaults["betas"]) == betas
    assert found == [phase1, phase2]
    assert (module.hparams.phase1_lr, module.hparams.phase2_lr) == lrs
    assert module.hparams.masked_loss is masked and (module.capture is not None) is attention
    loader = vars(datamodule.settings)
    assert loader["union_sampling"] is union and loader["solid_background"] is solid
    assert loader["replace_places"] == ("scene" if name == "seg_mix_swap" else "random")
    late = name in ("seg_mix_phase2", "seg_mix_origins", "seg_mix_backdrop", "seg_mix_layout", "beyond")
    assert loader["replace_backdrop"] == ("photo" if name in ("seg_mix_backdrop", "seg_mix_backdrop_all",
                                                              "seg_mix_layout", "beyond") else "random")
    thirds = [" on the left", " in the middle", " on the right"]
    assert loader["layout_phrases"] == (thirds if name in ("layout_captions", "seg_mix_layout", "beyond") else None)
    assert datamodule.settings.replace_from_step == (cfg.method.phase1_steps if late else 0)
    assert loader["replace_origin_loss"] is (name == "seg_mix_origins")
    found_remedies = (loader["replace_p"], loader["replace_full_loss"], loader["degrade_noise"],
                      module.hparams.lambda_contrastive, module.hparams.lambda_ema_teacher, module.hparams.ema_decay)
    assert found_remedies == remedies.get(name, (0.0, False, 0.0, 0.0, 0.0, 0.99))


def test_memory_presets_apply_to_evaluation_trials_too(tmp_path):
    cfg = compose_config("evaluate", ["experiment=official", "memory=12gb"], tmp_path)
    assert cfg.optimizer.state_bits == 8 and cfg.method.freeze_text_encoder and cfg.method.gradient_checkpointing
    assert cfg.trainer.precision == "bf16-mixed" and cfg.callbacks.samples is None


SWEEPS = sorted(p.stem for p in (REPO / "experiments" / "sweep").glob("*.yaml"))


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_composes(sweep):
    """As `bas-evaluate -m -cd experiments +sweep=<name>` composes it; the test-split sweeps read the test split
    and compare the methods they pre-register."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from break_a_scene.config import config_dir, register_resolvers
    from break_a_scene.evaluation.benchmark_sets import register_resolvers as register_evaluation_resolvers

    register_resolvers()
    register_evaluation_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("evaluate", [f"hydra.searchpath=[file://{REPO / 'experiments'}]", f"+sweep={sweep}"],
                      return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    if sweep.endswith("_test"):
        library = "library" in sweep  # 24 scenes as 12 pairs
        assert cfg.benchmark.root.endswith("benchmarks/toyworld_test24") and params["benchmark.scene_index"] == \
            ("range(0,12)" if library else "range(0,24)") and params.seed == ("0" if library else "0,1,2")
        assert cfg.benchmark.pictures == (2 if library else 1)
        expected = {"toyworld_test": "break_a_scene,no_phase1,no_masked_loss,no_attention_loss,no_union_sampling,"
                                     "beyond,layout_captions",
                    "toyworld_mmdit_test": "break_a_scene,no_attention_loss,beyond",
                    "toyworld_library_test": "break_a_scene,layout_captions"}[sweep]
        assert params.variant == expected
        assert cfg.model.components._target_.endswith("ToyMMDiT.load") == ("mmdit" in sweep)
