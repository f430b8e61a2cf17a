"""The training run built from the real configs, fitted by the real Lightning Trainer on the tiny model."""

import logging

import lightning as L
import pytest
import torch

from break_a_scene.training import build_run
from tests.helpers import FAST, compose_config


def fit(cfg):
    trainer, module, datamodule = build_run(cfg)
    trainer.fit(module, datamodule=datamodule)
    return trainer, module


def test_phase1_changes_only_the_new_rows(tmp_path, scene_dir):
    cfg = compose_config("train", [*FAST, f"data.scene.folder={scene_dir}", "method.phase2_steps=0"], tmp_path)
    trainer, module, datamodule = build_run(cfg)
    before = module.text_encoder.get_input_embeddings().weight.detach().clone()
    unet_before = [p.detach().clone() for p in module.unet.parameters()]
    trainer.fit(module, datamodule=datamodule)
    after = module.text_encoder.get_input_embeddings().weight.detach()
    new = module.tokens.ids
    assert new == [49408, 49409]
    others = torch.ones(after.shape[0], dtype=torch.bool)
    others[new] = False
    assert torch.equal(after[others], before[others])  # bit-identical, weight decay included
    assert not torch.equal(after[new], before[new])
    assert all(torch.equal(a, b) for a, b in zip(unet_before, module.unet.parameters()))


class RecordOptimizer(L.Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        opt = trainer.optimizers[0]
        first = opt.param_groups[0]["params"][0]
        self.rows.append({
            "optimizer": id(opt),
            "lr": opt.param_groups[0]["lr"],
            "params": sum(len(g["params"]) for g in opt.param_groups),
            "adam_step": float(opt.state[first]["step"]) if first in opt.state else 0.0,
            "betas": opt.param_groups[0]["betas"],
            "weight_decay": opt.param_groups[0]["weight_decay"],
            "unet_trainable": all(p.requires_grad for p in module.unet.parameters()),
            "phase": module.phase,
        })


@pytest.mark.parametrize("preset,betas,decay,callbacks", [
    ("adamw_code", (0.9, 0.999), 1e-2, []),
    ("adamw_paper", (0.9, 0.99), 1e-8, []),
    ("adamw_code", (0.9, 0.999), 1e-2, ["~callbacks"]),  # no callback at all: the switch is the module's own
])
def test_phase_switch_starts_a_fresh_optimizer(tmp_path, scene_dir, preset, betas, decay, callbacks):
    cfg = compose_config(
        "train", [*[o for o in FAST if not (callbacks and o.startswith("callbacks."))],
                  f"data.scene.folder={scene_dir}", f"optimizer={preset}", "method.phase1_steps=2",
                  "method.phase2_steps=2", *callbacks], tmp_path,
    )
    assert ("callbacks" in cfg) == (not callbacks)
    trainer, module, datamodule = build_run(cfg)
    recorder = RecordOptimizer()
    trainer.callbacks.append(recorder)
    trainer.fit(module, datamodule=datamodule)
    rows = recorder.rows
    assert [r["phase"] for r in rows] == [1, 1, 2, 2]
    assert [r["lr"] for r in rows] == [5e-4, 5e-4, 2e-6, 2e-6]
    assert rows[0]["optimizer"] == rows[1]["optimizer"] != rows[2]["optimizer"] == rows[3]["optimizer"]
    assert [r["adam_step"] for r in rows] == [1.0, 2.0, 1.0, 2.0]  # state reset at the switch
    assert rows[0]["params"] == 1  # the embedding matrix alone
    n_params = len(list(module.unet.parameters())) + len(list(module.text_encoder.parameters()))
    assert rows[2]["params"] == n_params
    assert [r["unet_trainable"] for r in rows] == [False, False, True, True]
    assert all(tuple(r["betas"]) == betas and r["weight_decay"] == decay for r in rows)
    assert trainer.global_step == 4


def test_no_phase1_starts_in_phase2(tmp_path, scene_dir):
    cfg = compose_config("train", [*FAST, f"data.scene.folder={scene_dir}", "method.phase1_steps=0"], tmp_path)
    trainer, module, datamodule = build_run(cfg)
    recorder = RecordOptimizer()
    trainer.callbacks.append(recorder)
    trainer.fit(module, datamodule=datamodule)
    assert [r["phase"] for r in recorder.rows] == [2, 2, 2]
    assert [r["lr"] for r in recorder.rows] == [2e-6] * 3


@pytest.mark.parametrize(
    "extra",
    [
        ["data.loader.batch_size=2"],
        ["data.prior_preservation.enabled=true", "data.prior_preservation.num_class_images=2",
         "data.prior_preservation.num_inference_steps=2"],
        ["data.background_token=true"],
        ["method.attention_capture=released"],
        ["method.gradient_checkpointing=true", "method.mask_normalization=area"],
        ["method.masked_loss=false", "method.lambda_attention=0"],
        ["variant=seg_mix_full", "data.loader.replace_p=1.0", "data.loader.batch_size=2"],
    ],
    ids=["batch2", "prior", "background", "released_capture", "checkpointing_area", "no_masked_no_attn",
         "seg_mix_full"],
)
def test_variants_train_with_finite_losses(tmp_path, scene_dir, extra):
    cfg = compose_config("train", [*FAST, f"data.scene.folder={scene_dir}", *extra], tmp_path)
    trainer, module = fit(cfg)
    metrics = trainer.callback_metrics
    assert trainer.global_step == 6
    assert torch.isfinite(metrics["loss"])
    assert ("loss_prior" in metrics) == ("data.prior_preservation.enabled=true" in extra)
    assert ("loss_attention" in metrics) == ("method.lambda_attention=0" not in extra)
    if "data.background_token=true" in extra:
        assert module.tokens.names == ["<asset0>", "<asset1>", "<asset2>"]
        assert module.run_info["class_names"] == ["red box", "blue box", "background"]
    if "data.prior_preservation.enabled=true" in extra:
        assert len(list((tmp_path / ".cache" / "break_a_scene" / "class_images").glob("*/*.png"))) == 2


def test_v_prediction_model_trains_on_velocity(tmp_path, scene_dir):
    from tests.conftest import tiny_components

    tiny_components(prediction_type="v_prediction").save_pipeline(tmp_path / "vpred")
    cfg = compose_config(
        "train", [*FAST, f"data.scene.folder={scene_dir}", "model=sd21",
                  f"model.components.pretrained_model_name_or_path={tmp_path / 'vpred'}", "model.resolution=96"],
        tmp_path,
    )
    trainer, module = fit(cfg)
    assert module.family.prediction_type == "v_prediction"
    assert module.attention_resolution == 12  # 96 px / 2 (VAE) / 4, derived, not hard-coded
    assert torch.isfinite(trainer.callback_metrics["loss"])


def test_resume_from_a_phase2_checkpoint(tmp_path, scene_dir):
    overrides = [*FAST, f"data.scene.folder={scene_dir}", "callbacks=checkpoint",
                 "callbacks.checkpoint.every_n_train_steps=3", "method.phase1_steps=2", "method.phase2_steps=2"]
    cfg = compose_config("train", overrides, tmp_path)
    trainer, module, datamodule = build_run(cfg)
    trainer.fit(module, datamodule=datamodule)
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 3 and saved["break_a_scene_phase"] == 2

    cfg = compose_config("train", [*overrides, f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}"],
                         tmp_path)
    trainer, module, datamodule = build_run(cfg)
    recorder = RecordOptimizer()
    trainer.callbacks.append(recorder)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    # one step left, in phase 2, continuing the phase-2 optimizer's state (its second step)
    assert [(r["phase"], r["lr"], r["adam_step"]) for r in recorder.rows] == [(2, 2e-6, 2.0)]


def _snapshot(module):
    return ({n: p.detach().clone() for n, p in module.unet.named_parameters()},
            module.text_encoder.get_input_embeddings().weight.detach().clone(),
            {n: p.detach().clone() for n, p in module.text_encoder.named_parameters() if "token_embedding" not in n})


@pytest.mark.parametrize("variant", ["ti_m", "cd_m", "db_m"])
def test_baselines_train_what_the_paper_says(tmp_path, scene_dir, variant):
    cfg = compose_config("train", [*FAST, f"data.scene.folder={scene_dir}", f"variant={variant}"], tmp_path)
    trainer, module, datamodule = build_run(cfg)
    assert cfg.method_name == variant and cfg.data.loader.solid_background and not cfg.method.masked_loss
    unet0, rows0, text0 = _snapshot(module)
    trainer.fit(module, datamodule=datamodule)
    unet1, rows1, text1 = _snapshot(module)
    new = module.tokens.ids
    others = torch.ones(rows1.shape[0], dtype=torch.bool)
    others[new] = False
    changed = {n for n in unet0 if not torch.equal(unet0[n], unet1[n])}
    kv = {n for n in unet0 if ".attn2.to_k." in n or ".attn2.to_v." in n}
    if variant == "ti_m":  # tokens only, both phases
        assert not changed and torch.equal(rows1[others], rows0[others]) and not torch.equal(rows1[new], rows0[new])
        assert all(torch.equal(text0[n], text1[n]) for n in text0)
    elif variant == "cd_m":  # cross-attention K/V and the token rows
        assert changed == kv and torch.equal(rows1[others], rows0[others]) and not torch.equal(rows1[new], rows0[new])
        assert all(torch.equal(text0[n], text1[n]) for n in text0)
        groups = trainer.optimizers[0].param_groups
        assert [g["lr"] for g in groups] == [cfg.method.phase1_lr, cfg.method.phase2_lr]
    else:  # everything from the first step, at the phase-2 lr
        assert kv < changed and any(not torch.equal(text0[n], text1[n]) for n in text0)
        assert trainer.optimizers[0].param_groups[0]["lr"] == cfg.method.phase2_lr


def test_one_initializer_word_for_every_mask(tmp_path, scene_dir):
    from break_a_scene.training import check_inputs

    cfg = compose_config("train", [*FAST, f"data.scene.folder={scene_dir}", "data.initializer_words=box"], tmp_path)
    assert check_inputs(cfg).initializer_words == ["box", "box"]


def test_tokens_start_from_their_class_names_first_words(tmp_path, scene_dir, caplog):
    from break_a_scene.training import check_inputs

    cfg = compose_config("train", [*FAST, f"data.scene.folder={scene_dir}", "data.initializer_from_classes=true"],
                         tmp_path)
    inputs = check_inputs(cfg)
    assert inputs.initializer_words == ["red", "blue"]  # classes.txt: "red box", "blue box"
    family = inputs.family
    with caplog.at_level(logging.WARNING):
        tokens = family.add_placeholder_tokens(inputs.token_names, inputs.initializer_words)
    assert "BPE pieces" not in caplog.text  # the documented first-word rule is not reported as a problem
    tokenizer, rows = family.tokenizer, family.text_encoder.get_input_embeddings().weight
    for token_id, word in zip(tokens.ids, ["red", "blue"]):
        (piece,) = tokenizer.encode(word, add_special_tokens=False)
        assert torch.equal(rows[token_id], rows[piece])


def test_gradient_accumulation_counts_optimizer_steps(tmp_path, scene_dir):
    cfg = compose_config("train", [*FAST, f"data.scene.folder={scene_dir}", "trainer.accumulate_grad_batches=2"],
                         tmp_path)
    trainer, module, datamodule = build_run(cfg)
    recorder = RecordOptimizer()
    trainer.callbacks.append(recorder)
    unet_before = [p.detach().clone() for p in module.unet.parameters()]
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 6  # 3 + 3 optimizer steps, 12 batches
    assert [r["phase"] for r in recorder.rows] == [1] * 6 + [2] * 6
    assert [r["adam_step"] for r in recorder.rows] == [0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0]
    assert not all(torch.equal(a, b) for a, b in zip(unet_before, module.unet.parameters()))


def test_cached_latents_sample_what_encoding_samples(tmp_path, scene_dir):
    cfg = compose_config("train", [*FAST, f"data.scene.folder={scene_dir}", "data.prior_preservation.enabled=true",
                                   "data.prior_preservation.num_class_images=2",
                                   "data.prior_preservation.num_inference_steps=2"], tmp_path)
    trainer, module, datamodule = build_run(cfg)
    assert module.latents.entries == {}
    calls = []
    encode = module.vae.encode
    module.vae.encode = lambda pixels: calls.append(pixels.shape[0]) or encode(pixels)
    datamodule.trainer = None
    from break_a_scene.data import collate_union_samples

    dataset = datamodule.samples(8)
    for index in range(8):
        batch = collate_union_samples([dataset[index]])
        pixels = torch.cat([batch["pixel_values"], batch["class_pixel_values"]])
        cached = module.latents.posterior(pixels, batch["latent_keys"]).sample(torch.Generator().manual_seed(index))
        fresh = encode(pixels).latent_dist.sample(torch.Generator().manual_seed(index))
        torch.testing.assert_close(cached, fresh, atol=1e-5, rtol=1e-5)  # batch vs one-at-a-time rounding
    keys = set(module.latents.entries)
    assert keys <= {"scene", "scene_flipped", "class_0", "class_1"} and {"class_0", "class_1"} <= keys
    assert calls == [1] * len(keys)  # each picture encoded once, alone; later steps read the cache


class RecordTeacher(L.Callback):
    """After each optimizer step: the trained conv_in weight, and the teacher's (None before it exists)."""

    def __init__(self):
        self.online, self.teacher = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.online.append(module.unet.conv_in.weight.detach().clone())
        teacher = module.ema_teacher
        self.teacher.append(None if teacher is None else teacher.model.conv_in.weight.detach().clone())


def test_ema_teacher_starts_with_phase2_and_averages_the_trained_weights(tmp_path, scene_dir):
    cfg = compose_config("train", [*FAST, f"data.scene.folder={scene_dir}", "variant=ema_teacher",
                                   "method.ema_decay=0.5"], tmp_path)
    trainer, module, datamodule = build_run(cfg)
    start = module.unet.conv_in.weight.detach().clone()  # phase 1 trains the token rows alone
    recorder = RecordTeacher()
    trainer.callbacks.append(recorder)
    trainer.fit(module, datamodule=datamodule)
    assert recorder.teacher[:3] == [None] * 3  # no teacher in phase 1 (3 steps)
    expected = start
    for online, teacher in zip(recorder.online[3:], recorder.teacher[3:]):
        expected = 0.5 * expected + 0.5 * online  # made from the weights phase 2 started from, moved each step
        torch.testing.assert_close(teacher, expected, rtol=0, atol=1e-7)
    assert not torch.equal(recorder.teacher[-1], recorder.online[-1])
    assert torch.isfinite(trainer.callback_metrics["loss_preserve"])
    assert not any(name.startswith("ema") for name in module.state_dict())  # not a registered module



class RecordProcessors(L.Callback):
    """The processor classes of the online denoiser and of the teacher, while the capture is installed."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if module.ema_teacher is not None:
            self.online = {type(p).__name__ for p in module.transformer.attn_processors.values()}
            self.teacher = {type(p).__name__ for p in module.ema_teacher.model.attn_processors.values()}


@pytest.mark.parametrize("model", ["tiny_sd3", pytest.param("tiny_flux", marks=pytest.mark.slow)])
def test_ema_teacher_on_mm_dit_families(tmp_path, scene_dir, model):
    cfg = compose_config("train", [*FAST, f"model={model}", f"data.scene.folder={scene_dir}",
                                   "data.initializer_words=[red,blue]", "variant=ema_teacher"], tmp_path)
    trainer, module, datamodule = build_run(cfg)
    recorder = RecordProcessors()
    trainer.callbacks.append(recorder)
    trainer.fit(module, datamodule=datamodule)
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["loss_preserve"]) and metrics["loss_attention"] > 0
    # the teacher was copied without the capture's probes: its forward adds nothing to the loss's maps
    assert "JointAttentionProbe" in recorder.online and "JointAttentionProbe" not in recorder.teacher
    assert not torch.equal(module.ema_teacher.model.proj_out.weight, module.transformer.proj_out.weight)
